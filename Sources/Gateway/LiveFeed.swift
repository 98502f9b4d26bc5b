import JSON
import KeyValueStore
import NATS
import Notifications

/// One client's live feed, whichever transport carries it: the user's
/// own notifications and those of the rooms it joined.
///
/// Resuming without gap or duplicate: the client's queue is attached to the
/// user's subject (and its rooms'), and the server has confirmed the
/// subscriptions, *before* the store is read, so everything published from
/// then on is buffered; the replay (notifications created after `since`,
/// oldest first) is sent next; then the buffer is flushed, skipping the
/// notifications the replay already carried; then the feed goes live. A
/// room joined later on a WebSocket does the same for that room alone.
struct LiveFeed<Sink: LiveSink>: Sendable {
    let user: String
    let sink: Sink
    /// `hello`, then the replay (or `reset`); emptied by `takeOpening()`.
    private(set) var opening: [[UInt8]]
    /// Ids a replay sent, not to be sent again from the live buffer.
    private var replayed: Set<String>
    /// The last notification id sent, for `since` after a disconnect.
    private(set) var lastSentID: String?
    /// The rooms joined.
    private(set) var rooms: Set<Room> = []
    /// The last room notification id sent, for the rooms' `since`.
    private(set) var lastRoomID: String?
    /// Rooms being joined.
    private var joining: [Room: Joining] = [:]

    /// A join under way.
    private struct Joining {
        /// The ids the room's live frames carried meanwhile, which its
        /// replay must not send again.
        var sentLive: Set<String> = []
        /// The client left the room meanwhile: the join is dropped when
        /// it ends (and still counts against the limit until then).
        var left = false
    }

    /// Attaches `sink` to the hub (the user's subject and `rooms`) and
    /// prepares the opening frames: the user's replay after `since`, and
    /// the rooms' after `roomsSince`.
    static func open(
        user: String, since: String?, rooms: [Room] = [], roomsSince: String? = nil, sink: Sink, hub: UserHub,
        repository: NotificationRepository, configuration: GatewayConfiguration
    ) async throws -> LiveFeed {
        try await hub.attach(user: user, sink: sink)
        var joined: [Room] = []
        do {
            for room in rooms {
                try await hub.join(room: room, sink: sink)
                joined.append(room)
            }
            hub.setQuietHours(try await repository.preferences(owner: user).quietHours, for: user)
            if repository.enrichment {
                // The client shows its newest page: its actors' profile
                // changes are sent from now on (later pages read here add theirs).
                hub.noteActors(try await repository.newestActors(owner: user, limit: Self.watchedPage), for: user)
            }
            var hello = JSONWriterBridge()
            hello.hello(user: user, unread: try await repository.unreadCount(owner: user))
            var opening = [hello.bytes]
            var replayed = Set<String>()
            var lastSentID = since
            if let since {
                if let records = try await replay(owner: user, after: since, repository: repository, configuration: configuration) {
                    for record in records {
                        opening.append(OutboundMessage.created(record, subjects: configuration.subjects).body)
                        replayed.insert(record.id)
                        lastSentID = record.id
                    }
                } else {
                    // Too far behind to replay: the client reloads its feed.
                    opening.append(resetFrame)
                }
            }
            var feed = LiveFeed(user: user, sink: sink, opening: opening, replayed: replayed, lastSentID: lastSentID, rooms: Set(rooms))
            if let roomsSince {
                feed.lastRoomID = roomsSince
                var records: [NotificationRecord] = []
                for room in rooms {
                    if let page = try await replay(owner: room.owner, after: roomsSince, repository: repository, configuration: configuration) {
                        records += page
                    } else {
                        var json = JSONWriterBridge()
                        json.joined(room.name, reset: true)
                        feed.opening.append(json.bytes)
                    }
                }
                for record in records.sorted(by: { $0.id < $1.id }) {
                    feed.opening.append(OutboundMessage.created(record, subjects: configuration.subjects).body)
                    feed.replayed.insert(record.id)
                    feed.lastRoomID = record.id
                }
            }
            return feed
        } catch {
            hub.detach(user: user, sink: sink)
            for room in joined { hub.leave(room: room, sink: sink) }
            throw error
        }
    }

    /// How many of the newest notifications' actors a connection follows
    /// from the start (the feed API's default page).
    static var watchedPage: Int { 20 }

    /// `owner`'s notifications created after `since`, oldest first; `nil`
    /// when `since` is no id or more than ``GatewayConfiguration/maxReplay`` follow it.
    static func replay(
        owner: String, after since: String, repository: NotificationRepository, configuration: GatewayConfiguration
    ) async throws(KeyValueStoreError) -> [NotificationRecord]? {
        guard NotificationIDGenerator.isValid(since) else { return nil }
        let records = try await repository.notifications(owner: owner, after: since, limit: configuration.maxReplay + 1)
        return records.count > configuration.maxReplay ? nil : records
    }

    /// The opening frames, once; the feed keeps only what filtering needs.
    mutating func takeOpening() -> [[UInt8]] {
        defer { opening = [] }
        return opening
    }

    /// Drops the frames a replay already sent (a group that moved to
    /// the top is replayed as created); remembers the last ids sent.
    mutating func live(_ frames: [[UInt8]]) -> [[UInt8]] {
        frames.filter { admit($0) }
    }

    /// Whether `frame` goes out (see ``live(_:)``).
    mutating func admit(_ frame: [UInt8]) -> Bool {
        if let id = createdNotificationID(frame) ?? updatedNotificationID(frame) {
            if !replayed.isEmpty, replayed.remove(id) != nil { return false }
            // An actor leaving a group updates it where it is.
            if lastSentID.map({ id > $0 }) ?? true { lastSentID = id }
            return true
        }
        if let (room, id) = roomNotificationID(frame) {
            if !replayed.isEmpty, replayed.remove(id) != nil { return false }
            if !joining.isEmpty, joining[room] != nil { joining[room]?.sentLive.insert(id) }
            if lastRoomID.map({ id > $0 }) ?? true { lastRoomID = id }
        }
        return true
    }

    /// A room is being joined: its live frames from now on are noted, so
    /// its replay skips them.
    mutating func beginJoining(_ room: Room) {
        joining[room] = Joining()
    }

    /// A join of `room` under way that the client left is kept after all;
    /// `false` when there is none.
    mutating func rejoin(_ room: Room) -> Bool {
        guard joining[room]?.left == true else { return false }
        joining[room]?.left = false
        return true
    }

    /// The room's subscription is confirmed and its replay read: the
    /// replay frames not already sent live. `nil` when the client left the
    /// room meanwhile: the caller leaves it at the hub.
    mutating func finishJoining(_ room: Room, replay: [NotificationRecord], subjects: OutboundSubjects) -> [[UInt8]]? {
        guard let join = joining.removeValue(forKey: room), !join.left else { return nil }
        rooms.insert(room)
        var frames: [[UInt8]] = []
        for record in replay where !join.sentLive.contains(record.id) {
            frames.append(OutboundMessage.created(record, subjects: subjects).body)
            if lastRoomID.map({ record.id > $0 }) ?? true { lastRoomID = record.id }
        }
        return frames
    }

    /// Joining `room` failed.
    mutating func cancelJoining(_ room: Room) {
        joining[room] = nil
    }

    /// Whether `room` is joined or being joined.
    func isIn(_ room: Room) -> Bool {
        rooms.contains(room) || joining[room].map { !$0.left } == true
    }

    /// Rooms joined or being joined (left or not).
    var roomCount: Int { rooms.count + joining.count }

    /// Leaves `room` (a join under way is left when it ends).
    mutating func leave(_ room: Room, hub: UserHub) {
        if joining[room] != nil {
            joining[room]?.left = true
            return
        }
        guard rooms.remove(room) != nil else { return }
        hub.leave(room: room, sink: sink)
    }

    func close(hub: UserHub) {
        hub.detach(user: user, sink: sink)
        for room in rooms { hub.leave(room: room, sink: sink) }
    }
}
