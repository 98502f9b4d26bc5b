import CoreMetrics
import Logging
import Notifications
import ServiceLifecycle
import Synchronization

/// Writes clients' delivery receipts (`ack` and `seen` frames, `POST
/// /v1/notifications/receipts`) to the store in batches: every client acks
/// every frame, and one transaction per frame would cost a disk sync each.
/// Receipts wait at most ``interval``; a failed write is retried with the
/// next batch. Receipts are telemetry: past ``limit`` waiting, the oldest
/// are dropped and counted, so a store outage cannot exhaust memory.
final class ReceiptWriter: Service, Sendable {
    private struct State {
        var pending: [Receipt] = []
        /// Callers waiting for their receipts to be written.
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    static let interval = Duration.milliseconds(200)
    static let limit = 100_000
    private let state = Mutex(State())
    private let repository: NotificationRepository
    private let logger: Logger
    private let dropped = Counter(label: "notify_receipts_dropped_total")

    init(repository: NotificationRepository, logger: Logger) {
        self.repository = repository
        self.logger = logger
    }

    /// Queues receipts for the next batch.
    func add(_ receipts: [Receipt]) {
        let overflow = state.withLock { state -> Int in
            state.pending += receipts
            let over = state.pending.count - Self.limit
            if over > 0 { state.pending.removeFirst(over) }
            return max(over, 0)
        }
        if overflow > 0 { dropped.increment(by: overflow) }
    }

    /// Queues receipts and returns once the batch holding them was written
    /// (or failed: the writer retries it).
    func write(_ receipts: [Receipt]) async {
        await withCheckedContinuation { continuation in
            add(receipts)
            state.withLock { $0.waiters.append(continuation) }
        }
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.interval) }
            await flush()
        }
        await flush()
    }

    private func flush() async {
        let (batch, waiters) = state.withLock { state in
            defer { state.pending = []; state.waiters = [] }
            return (state.pending, state.waiters)
        }
        defer { for waiter in waiters { waiter.resume() } }
        guard !batch.isEmpty else { return }
        do {
            _ = try await repository.recordReceipts(batch)
        } catch {
            logger.warning("writing delivery receipts failed; retrying with the next batch", metadata: [
                "receipts": .stringConvertible(batch.count), "error": .string("\(error)"),
            ])
            state.withLock { $0.pending = batch + $0.pending }
        }
    }
}
