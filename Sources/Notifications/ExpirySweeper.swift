public import KeyValueStore
public import Logging
public import ServiceLifecycle

/// Deletes expired notifications, their action-key items and idempotency
/// markers in the background, a bounded number at a time, keeping the
/// unread counters right (``NotificationRepository/removeExpired(limit:)``).
public struct ExpirySweeper: Service, CustomStringConvertible {
    let repository: NotificationRepository
    let interval: Duration
    let batchLimit: Int
    let logger: Logger

    public init(repository: NotificationRepository, interval: Duration = .seconds(60), batchLimit: Int = 1_000, logger: Logger) {
        self.repository = repository
        self.interval = interval
        self.batchLimit = batchLimit
        self.logger = logger
    }

    public var description: String { "ExpirySweeper(every \(interval))" }

    /// Sweeps until nothing expired is left; returns how many it deleted.
    @discardableResult
    public func sweep() async throws(KeyValueStoreError) -> Int {
        var total = 0
        while !Task.isShuttingDownGracefully {
            let deleted = try await repository.removeExpired(limit: batchLimit)
            total += deleted
            if deleted < batchLimit { break }
        }
        return total
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let deleted = try await sweep()
                if deleted > 0 { logger.debug("swept expired items", metadata: ["deleted": .stringConvertible(deleted)]) }
            } catch {
                logger.warning("sweeping expired items failed; retrying later", metadata: ["error": .string(error.description)])
            }
            try? await cancelWhenGracefulShutdown { [interval] in try await Task.sleep(for: interval) }
        }
    }
}
