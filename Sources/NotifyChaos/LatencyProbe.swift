import Foundation
import NATS
import Synchronization

/// Publish → delivery latency of notifications other users receive while a
/// fault is aimed at someone else: each probe event is timed from just
/// before its publish to the moment its `notification.created` arrives
/// (on NATS or at a WebSocket), keyed by owner and action key.
final class LatencyProbe: Sendable {
    private struct State {
        var published: [String: ContinuousClock.Instant] = [:]
        var milliseconds: [String: Double] = [:]
    }

    private let state = Mutex(State())

    static func key(owner: String, actionKey: String) -> String { owner + " " + actionKey }

    func published(_ key: String) {
        let now = ContinuousClock.now
        state.withLock { $0.published[key] = now }
    }

    /// Records the first arrival of a `notification.created` body.
    func received(_ payload: [UInt8]) {
        let now = ContinuousClock.now
        guard let object = (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any],
              object["type"] as? String == "notification.created",
              let notification = object["notification"] as? [String: Any],
              let owner = notification["owner"] as? String, let actionKey = notification["action_key"] as? String
        else { return }
        let key = Self.key(owner: owner, actionKey: actionKey)
        state.withLock { state in
            guard state.milliseconds[key] == nil, let sent = state.published[key] else { return }
            state.milliseconds[key] = seconds(now - sent) * 1_000
        }
    }

    /// Latencies of those probe events published under `keys` that arrived.
    func latencies(_ keys: [String]) -> [Double] {
        state.withLock { state in keys.compactMap { state.milliseconds[$0] } }
    }

    /// A probe event as sent.
    struct Sent: Sendable {
        let owner: String
        let actionKey: String
        let acknowledged: Bool
        var key: String { LatencyProbe.key(owner: owner, actionKey: actionKey) }
    }

    /// Publishes `rate` probe events a second for `duration`, over `owners`
    /// owners named `<prefix><n>`, each a new follow (so each makes one
    /// `notification.created`).
    func run(jetStream: JetStream, prefix: String, owners: Int, rate: Int, duration: Duration) async -> [Sent] {
        let clock = ContinuousClock()
        let interval = Duration.seconds(1) / rate
        let count = Int(seconds(duration) * Double(rate))
        var deadline = clock.now
        var sent: [Sent] = []
        let base = Int.random(in: 0..<1_000_000_000)
        for index in 0..<count {
            let owner = prefix + String(index % owners)
            let event = ChaosEvent(kind: "user.follow", owner: owner, trigger: "p\(base)-\(index)", resource: owner, eventID: nil)
            published(Self.key(owner: owner, actionKey: event.actionKey))
            let acknowledged = (try? await jetStream.publish(event.subject, payload: event.body)) != nil
            sent.append(Sent(owner: owner, actionKey: event.actionKey, acknowledged: acknowledged))
            deadline += interval
            try? await clock.sleep(until: deadline)
        }
        return sent
    }
}

/// `p50 x ms, p99 y ms (n/m arrived)` for a report.
func latencySummary(_ values: [Double], of total: Int) -> String {
    String(format: "p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d/%d arrived)", percentile(values, 0.5), percentile(values, 0.99), values.max() ?? 0, values.count, total)
}
