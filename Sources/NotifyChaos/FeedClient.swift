import Foundation
import HummingbirdWSClient
import Logging
import NIOWebSocket
import Synchronization

/// One user's WebSocket client (`/ws`), as a careful browser tab would be:
/// on every disconnect it reconnects with `since=<last notification id>`
/// (having received none, it first loads its feed over HTTP, as a page
/// does, and resumes from the newest id there, or from the lowest id
/// `000…0` when the feed was empty, so that nothing stored between the
/// load and the new connection is missed),
/// and it records every `notification.created` and `notification.deleted`
/// it receives (a `notification.updated` that moved a group to the top
/// deletes the id it replaced and creates the new one).
final class FeedClient: Sendable {
    struct State: Sendable {
        /// Ids of created notifications, in the order first received.
        var created: [String] = []
        var seen = Set<String>()
        var actionKeys = Set<String>()
        /// Ids of `notification.deleted` frames, and of notifications a
        /// group replaced (aggregation).
        var deleted = Set<String>()
        /// Each group's notification on screen, by `group_id`.
        var groups: [String: String] = [:]
        /// Created notifications received again (the contract allows none).
        var duplicates = 0
        var hellos = 0
        var resets = 0
        var lastID: String?
        var closeCodes: [String: Int] = [:]
        /// Every frame in arrival order: `<connection>\t<type>\t<id>`, and
        /// each connection's `since` (for explaining a gap).
        var trace: [String] = []
    }

    let user: String
    let token: String
    /// Times each `notification.created` this client receives, when set.
    let probe: LatencyProbe?
    private let state = Mutex(State())
    private let stopping = Atomic<Bool>(false)

    init(user: String, token: String, probe: LatencyProbe? = nil) {
        self.user = user
        self.token = token
        self.probe = probe
    }

    var snapshot: State { state.withLock { $0 } }

    /// Connects to the gateway on `port` and keeps reconnecting until ``stop()``.
    func run(port: Int) async {
        var logger = Logger(label: "chaos-ws")
        logger.logLevel = .critical
        while !stopping.load(ordering: .relaxed) {
            if state.withLock({ $0.lastID == nil && $0.hellos > 0 }), let feed = try? await GatewayCrashes.feedIDs(port: port, user: user) {
                state.withLock { state in
                    state.trace.append("\(state.hellos)\tloaded\t\(feed.count) from GET /v1/notifications")
                    for id in feed.sorted() where state.seen.insert(id).inserted { state.created.append(id) }
                    state.lastID = feed.max() ?? String(repeating: "0", count: 26)
                }
            }
            var url = "ws://127.0.0.1:\(port)/ws?access_token=\(token)"
            let last = state.withLock { state in
                state.trace.append("\(state.hellos + 1)\tconnect\tsince=\(state.lastID ?? "-")")
                return state.lastID
            }
            if let last { url += "&since=\(last)" }
            do {
                let close = try await WebSocketClient.connect(url: url, logger: logger) { inbound, outbound, _ in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for try await message in inbound.messages(maxSize: 1 << 20) {
                                if case .text(let text) = message { self.record(text) }
                            }
                        }
                        group.addTask {
                            while !self.stopping.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(50)) }
                            try await outbound.close(.normalClosure, reason: nil)
                        }
                        try await group.next()
                        group.cancelAll()
                    }
                }
                let code = close.map { "\($0.closeCode)" } ?? "no close frame"
                state.withLock { $0.closeCodes[code, default: 0] += 1 }
            } catch {
                state.withLock { $0.closeCodes["error", default: 0] += 1 }
            }
            if stopping.load(ordering: .relaxed) { break }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
    }

    private func record(_ text: String) {
        probe?.received(Array(text.utf8))
        guard let frame = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else { return }
        state.withLock { state in
            switch frame["type"] as? String {
            case "hello":
                state.hellos += 1
            case "reset":
                state.resets += 1
            case "notification.created", "notification.updated":
                guard let notification = frame["notification"] as? [String: Any], let id = notification["id"] as? String else { return }
                let updated = frame["type"] as? String == "notification.updated"
                state.trace.append("\(state.hellos)\t\(updated ? "updated" : "created")\t\(id)")
                // One entry per group: a new id replaces the one shown.
                if let replaces = frame["replaces"] as? String { state.deleted.insert(replaces) }
                if let group = notification["group_id"] as? String {
                    if let shown = state.groups[group], shown != id { state.deleted.insert(shown) }
                    state.groups[group] = id
                }
                if state.seen.insert(id).inserted {
                    state.created.append(id)
                    if let key = notification["action_key"] as? String { state.actionKeys.insert(key) }
                } else if !updated {
                    state.duplicates += 1
                }
                if state.lastID.map({ id > $0 }) ?? true { state.lastID = id }
            case "notification.deleted":
                guard let id = frame["id"] as? String else { return }
                state.trace.append("\(state.hellos)\tdeleted\t\(id)")
                state.deleted.insert(id)
            default:
                break
            }
        }
    }
}
