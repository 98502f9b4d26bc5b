import Foundation
import NATS
import Synchronization

/// Keeps every message of a core NATS subscription (`users.*.notifications`,
/// `dlq.>`) for the checks at the end of a scenario.
final class SubjectRecorder: Sendable {
    private final class Messages: Sendable {
        let list = Mutex<[NATSMessage]>([])
    }

    private let messages = Messages()
    private let subscription: NATSSubscription
    private let task: Task<Void, Never>

    init(_ connection: NATSConnection, subject: String) async throws {
        let subscription = try connection.subscribe(subject, bufferLimit: 1 << 22)
        try await connection.flush()
        self.subscription = subscription
        let messages = self.messages
        task = Task {
            while !Task.isCancelled {
                let batch = await subscription.nextBatch(max: 4_096)
                if batch.isEmpty { return }
                messages.list.withLock { $0 += batch }
            }
        }
    }

    /// Everything received so far.
    var received: [NATSMessage] { messages.list.withLock { $0 } }

    var count: Int { messages.list.withLock { $0.count } }

    /// Messages the subscription dropped because the suite read too slowly.
    var dropped: Int { subscription.droppedMessages }

    func stop() {
        subscription.unsubscribe()
        task.cancel()
    }
}

/// The per-user messages of CONTRACT §3, tallied by notification id.
struct UserMessageTally {
    /// Id → how many `notification.created` messages carried it.
    var created: [String: Int] = [:]
    var deleted = Set<String>()
    var unreadable = 0

    init(_ messages: [NATSMessage]) {
        for message in messages {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(message.payload))) as? [String: Any],
                  let type = object["type"] as? String
            else { unreadable += 1; continue }
            switch type {
            case "notification.created":
                if let id = (object["notification"] as? [String: Any])?["id"] as? String { created[id, default: 0] += 1 } else { unreadable += 1 }
            case "notification.deleted":
                if let id = object["id"] as? String { deleted.insert(id) } else { unreadable += 1 }
            default:
                break
            }
        }
    }

    /// Ids published as created more than once (at-least-once after a crash).
    var republished: Int { created.values.filter { $0 > 1 }.count }
}
