import JSON
import KeyValueStore
import NATS
import Notifications

/// One client's live feed, whichever transport carries it.
///
/// Resuming without gap or duplicate: the client's queue is attached to the
/// user's subject, and the server has confirmed the subscription, *before*
/// the store is read, so everything published from then on is buffered; the replay (notifications created after `since`,
/// oldest first) is sent next; then the buffer is flushed, skipping the
/// notifications the replay already carried; then the feed goes live.
struct LiveFeed<Sink: LiveSink>: Sendable {
    let user: String
    let sink: Sink
    /// `hello`, then the replay (or `reset`); emptied by `takeOpening()`.
    private(set) var opening: [[UInt8]]
    /// Ids the replay sent, not to be sent again from the live buffer.
    private var replayed: Set<String>
    /// The last notification id sent, for `since` after a disconnect.
    private(set) var lastSentID: String?

    /// Attaches `sink` to the hub and prepares the opening frames.
    static func open(
        user: String, since: String?, sink: Sink, hub: UserHub, repository: NotificationRepository, configuration: GatewayConfiguration
    ) async throws -> LiveFeed {
        try await hub.attach(user: user, sink: sink)
        do {
            hub.setQuietHours(try await repository.preferences(owner: user).quietHours, for: user)
            var hello = JSONWriterBridge()
            hello.hello(user: user, unread: try await repository.unreadCount(owner: user))
            var opening = [hello.bytes]
            var replayed = Set<String>()
            var lastSentID = since
            if let since {
                if NotificationIDGenerator.isValid(since) {
                    let records = try await repository.notifications(owner: user, after: since, limit: configuration.maxReplay + 1)
                    if records.count > configuration.maxReplay {
                        // Too far behind to replay: the client reloads its feed.
                        opening.append(resetFrame)
                    } else {
                        for record in records {
                            opening.append(OutboundMessage.created(record, prefix: configuration.userSubjectPrefix).body)
                            replayed.insert(record.id)
                            lastSentID = record.id
                        }
                    }
                } else {
                    opening.append(resetFrame)
                }
            }
            return LiveFeed(user: user, sink: sink, opening: opening, replayed: replayed, lastSentID: lastSentID)
        } catch {
            hub.detach(user: user, sink: sink)
            throw error
        }
    }

    /// The opening frames, once; the feed keeps only what filtering needs.
    mutating func takeOpening() -> [[UInt8]] {
        defer { opening = [] }
        return opening
    }

    /// Drops the frames the replay already sent (a group that moved to
    /// the top is replayed as created); remembers the last id sent.
    mutating func live(_ frames: [[UInt8]]) -> [[UInt8]] {
        frames.filter { frame in
            guard let id = createdNotificationID(frame) ?? updatedNotificationID(frame) else { return true }
            if !replayed.isEmpty, replayed.remove(id) != nil { return false }
            // An actor leaving a group updates it where it is.
            if lastSentID.map({ id > $0 }) ?? true { lastSentID = id }
            return true
        }
    }

    func close(hub: UserHub) {
        hub.detach(user: user, sink: sink)
    }
}
