import Foundation
import NATS
import Synchronization

/// Counts per-user messages and, in the latency phase, measures each one's
/// delay from the send time it carries.
final class Receiver: Sendable {
    private struct State {
        var count = 0
        var last = ContinuousClock.now
        var origin: ContinuousClock.Instant?
        var latencies: [Double] = []
    }

    private let box: StateBox
    private let task: Task<Void, Never>
    private let subscription: NATSSubscription

    init(_ subscription: NATSSubscription) {
        self.subscription = subscription
        let box = StateBox()
        self.box = box
        task = Task {
            while !Task.isCancelled {
                let batch = await subscription.nextBatch(max: 4_096)
                if batch.isEmpty { return }
                let now = ContinuousClock.now
                box.record(batch, at: now)
            }
        }
    }

    private final class StateBox: Sendable {
        let state = Mutex(State())

        func record(_ batch: [NATSMessage], at now: ContinuousClock.Instant) {
            state.withLock { state in
                state.count += batch.count
                state.last = now
                guard let origin = state.origin else { return }
                let nowNanos = nanoseconds(since: origin, at: now)
                for message in batch {
                    guard let sent = sentNanoseconds(in: message.payload) else { continue }
                    state.latencies.append((nowNanos - sent) / 1e6)
                }
            }
        }
    }

    func trackLatency(origin: ContinuousClock.Instant) {
        box.state.withLock { $0.origin = origin; $0.latencies = [] }
    }

    /// Waits for `count` messages in all; returns how many came and when the last did.
    func wait(for count: Int, timeout: Duration) async -> (Int, ContinuousClock.Instant) {
        let deadline = ContinuousClock.now + timeout
        var idleSince = ContinuousClock.now
        var seen = 0
        while ContinuousClock.now < deadline {
            let (current, last) = box.state.withLock { ($0.count, $0.last) }
            if current >= count { return (current, last) }
            if current != seen { seen = current; idleSince = ContinuousClock.now }
            if ContinuousClock.now - idleSince > .seconds(20) { return (current, last) }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return box.state.withLock { ($0.count, $0.last) }
    }

    func latencies(count: Int, timeout: Duration) async -> [Double] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if box.state.withLock({ $0.latencies.count }) >= count { break }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return box.state.withLock { $0.latencies }
    }

    func stop() {
        subscription.unsubscribe()
        task.cancel()
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
