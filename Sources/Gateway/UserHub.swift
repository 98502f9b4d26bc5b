import JSON
import NATS
import Notifications
import Synchronization

/// Why a live connection is being closed.
enum CloseReason: Sendable {
    /// The server is shutting down (WebSocket close 1001).
    case shutdown
    /// The client's token expired (1008).
    case tokenExpired
    /// The client went away.
    case clientGone
    /// The gateway's NATS connection was interrupted, so live frames may
    /// have been missed: the client resumes from the store (WebSocket close
    /// 1012 naming its `since`; an SSE stream ends, and the browser
    /// reconnects with `Last-Event-ID`).
    case resume
}

/// What happened to a frame handed to a `LiveSink`.
enum PushResult {
    case queued
    /// The client is too far behind: this frame was not taken and the
    /// connection will be closed (WebSocket 1013).
    case becameSlow
    /// The sink is closed or already slow.
    case refused
}

/// Where the hub delivers one connection's live frames: a `ClientQueue`
/// (drained by an SSE response) or a `WebSocketOutbox` (drained on the
/// WebSocket's event loop). Both are bounded. The hub calls them on
/// nats.c's callback thread, so neither may block.
protocol LiveSink: AnyObject, Sendable {
    /// Adds a frame. `.becameSlow` the first time the client is too far
    /// behind; `.refused` after that, or once closed. Never blocks.
    @discardableResult
    func push(_ frame: [UInt8]) -> PushResult
    /// Ends the connection for `reason` (the first reason given wins),
    /// after the frames already queued.
    func close(_ reason: CloseReason)
}

/// Frames waiting to be sent to one SSE client, taken by its response
/// task with `next()`. Bounded: a client that falls
/// more than `limit` frames behind is marked slow and its queue stops
/// accepting, so a stalled client can never grow the server's memory.
final class ClientQueue: LiveSink {
    /// What the sender loop gets next.
    enum Next: Sendable {
        case frames([[UInt8]])
        /// The client fell behind: close it (1013) so it resumes with `since`.
        case overflow
        case closed(CloseReason)
    }

    private struct State {
        var frames: [[UInt8]] = []
        var head = 0
        var waiter: CheckedContinuation<Void, Never>?
        var overflowed = false
        var closed: CloseReason?
        var count: Int { frames.count - head }
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Adds a frame. `.becameSlow` the first time the client is too far
    /// behind (the queue then takes nothing more); `.refused` after that or
    /// once closed. Never blocks.
    @discardableResult
    func push(_ frame: [UInt8]) -> PushResult {
        let (result, waiter) = state.withLock { state -> (PushResult, CheckedContinuation<Void, Never>?) in
            guard state.closed == nil, !state.overflowed else { return (.refused, nil) }
            let result: PushResult
            if state.count >= limit {
                state.overflowed = true
                result = .becameSlow
            } else {
                state.frames.append(frame)
                result = .queued
            }
            defer { state.waiter = nil }
            return (result, state.waiter)
        }
        waiter?.resume()
        return result
    }

    /// Ends the queue; the sender gets `.closed` (the first reason given)
    /// once it has taken what is queued.
    func close(_ reason: CloseReason) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.closed == nil { state.closed = reason }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Everything queued, or waits for the next frame. An overflowed queue
    /// reports `.overflow` at once, whatever is still queued.
    func next() async -> Next {
        while true {
            let ready = state.withLock { state -> Next? in
                if state.overflowed { return .overflow }
                if state.count > 0 {
                    let batch = Array(state.frames[state.head...])
                    state.frames.removeAll(keepingCapacity: state.frames.count <= 64)
                    state.head = 0
                    return .frames(batch)
                }
                return state.closed.map { .closed($0) }
            }
            if let ready { return ready }
            if Task.isCancelled { return .closed(.clientGone) }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state -> Bool in
                        if state.count > 0 || state.closed != nil || state.overflowed || Task.isCancelled { return true }
                        state.waiter = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume()
            }
        }
    }
}

/// Too many connections for one user.
struct TooManyConnections: Error {
    let limit: Int
}

/// The per-user and per-room NATS subscriptions of one gateway: one
/// subscription to `<prefix>.<user>.notifications` per connected user,
/// shared by that user's connections and dropped with the last one; the
/// same for each room some connection joined (keyed by ``Room/owner``,
/// which no user id can be). NATS routes each user's and room's messages
/// only to the gateways holding connections for it; gateways share
/// nothing else.
final class UserHub: Sendable {
    private struct Entry {
        var subscription: NATSHandlerSubscription
        var clients: [ObjectIdentifier: any LiveSink]
        /// Created and deleted messages delivered lately. Per-user messages
        /// are at-least-once (a worker that crashed after publishing
        /// publishes its outbox again); a repeat is dropped here so that
        /// clients see each change once.
        var recent = RecentKeys()
        /// The user's quiet hours, once read (`nil`: none, or not read yet).
        var quietHours: QuietHours?
        /// New notifications held back during quiet hours, for the summary.
        var held = HeldNotifications()
        /// Whose profile changes the clients are sent (enrichment).
        var actors = ActorInterest()
    }

    /// New notifications not pushed during quiet hours.
    struct HeldNotifications {
        var count = 0
        var first: String?
        var last: String?
        /// Sends the summary when the quiet hours end.
        var timer: Task<Void, Never>?
    }

    private let entries = Mutex<[String: Entry]>([:])
    /// Room entries among them.
    private let roomEntries = Atomic<Int>(0)

    /// Whether an entry's key is a room's (``Room/owner``, `@…`) rather
    /// than a user id.
    private static func isRoom(_ key: String) -> Bool { key.hasPrefix("@") }
    private let connection: NATSConnection
    private let prefix: String
    private let roomPrefix: String
    private let maxConnectionsPerUser: Int
    private let metrics: GatewayMetrics

    /// Whether clients are sent their actors' profile changes (enrichment on).
    private let tracksActors: Bool

    init(connection: NATSConnection, subjects: OutboundSubjects, maxConnectionsPerUser: Int, metrics: GatewayMetrics, tracksActors: Bool = false) {
        self.tracksActors = tracksActors
        self.connection = connection
        self.prefix = subjects.users
        self.roomPrefix = subjects.rooms
        self.maxConnectionsPerUser = maxConnectionsPerUser
        self.metrics = metrics
    }

    /// Starts delivering `user`'s messages to `sink`, and returns once the
    /// server has the subscription (one round trip): everything published
    /// from then on reaches `sink`, so a store read after this call leaves
    /// no gap. The user id must already be validated (it becomes a subject
    /// token).
    func attach(user: String, sink: any LiveSink) async throws {
        precondition(EventValidator.isValidUserID(user), "user ids are validated before they reach the hub")
        try register(key: user, subject: OutboundMessage.userSubject(user, prefix: prefix), sink: sink, limit: maxConnectionsPerUser)
        await confirmSubscriptions()
    }

    /// Starts delivering `room`'s messages to `sink`, and returns once the
    /// server has the subscription, as ``attach(user:sink:)`` does.
    func join(room: Room, sink: any LiveSink) async throws {
        try register(key: room.owner, subject: room.subject(prefix: roomPrefix), sink: sink, limit: nil)
        await confirmSubscriptions()
    }

    /// Stops delivering `room`'s messages to `sink`.
    func leave(room: Room, sink: any LiveSink) {
        detach(key: room.owner, sink: sink)
    }

    private func confirmSubscriptions() async {
        do {
            try await connection.flush(timeout: .seconds(2))
        } catch {
            // NATS is down or slow: the subscription goes out with the
            // reconnect. Workers cannot publish while NATS is down either.
        }
    }

    private func register(key: String, subject: String, sink: any LiveSink, limit: Int?) throws {
        try entries.withLock { (entries) throws in
            if var entry = entries[key] {
                if let limit, entry.clients.count >= limit { throw TooManyConnections(limit: limit) }
                entry.clients[ObjectIdentifier(sink)] = sink
                entries[key] = entry
                return
            }
            let subscription = try connection.subscribe(subject) { [weak self] message in
                self?.deliver(message.payload, to: key)
            }
            entries[key] = Entry(subscription: subscription, clients: [ObjectIdentifier(sink): sink])
            if Self.isRoom(key) { metrics.rooms(roomEntries.add(1, ordering: .relaxed).newValue) }
        }
    }

    /// Stops delivering to `sink`; the last one of a user ends the subscription.
    func detach(user: String, sink: any LiveSink) {
        detach(key: user, sink: sink)
    }

    private func detach(key user: String, sink: any LiveSink) {
        let finished = entries.withLock { entries -> NATSHandlerSubscription? in
            guard var entry = entries[user] else { return nil }
            entry.clients[ObjectIdentifier(sink)] = nil
            if entry.clients.isEmpty {
                entry.held.timer?.cancel()
                entries[user] = nil
                if Self.isRoom(user) { metrics.rooms(roomEntries.subtract(1, ordering: .relaxed).newValue) }
                return entry.subscription
            }
            entries[user] = entry
            return nil
        }
        finished?.unsubscribe()
    }

    /// Called on nats.c's thread: hand the frame to every connection of the
    /// user (or room), unless it repeats one delivered lately, or it is a
    /// new notification during the user's quiet hours (held for the
    /// summary; a room's frames are never held).
    private func deliver(_ frame: [UInt8], to user: String) {
        // A room's frames repeat byte for byte (an outbox published again).
        let key = Self.isRoom(user) ? String(decoding: frame, as: UTF8.self) : repeatKey(frame)
        if frame.starts(with: preferencesUpdatedPrefix) {
            // Another tab (or gateway) changed them: follow at once.
            if case .object(let object)? = try? JSONParser.parse(frame), case .object(let fields)? = object["preferences"],
               let preferences = try? Preferences.parse(object: fields).get() {
                setQuietHours(preferences.quietHours, for: user)
            }
        }
        let actors = tracksActors ? Self.triggerUsers(in: frame) : []
        let (sinks, outcome) = entries.withLock { entries -> ([any LiveSink], Delivered) in
            guard let clients = entries[user]?.clients else { return ([], .pushed) }
            // In place: the ring is not copied.
            if let key, entries[user]?.recent.insert(key) == false { return ([], .repeated) }
            for actor in actors { entries[user]?.actors.insert(actor) }
            if let quiet = entries[user]?.quietHours, let end = quiet.end(ifQuietAt: RepositoryClock.milliseconds() / 1000),
               let id = newNotificationID(frame), !isHighPriority(frame) {
                hold(id, for: user, until: end, in: &entries)
                return ([], .held)
            }
            return (Array(clients.values), .pushed)
        }
        switch outcome {
        case .repeated: metrics.repeatDropped()
        case .held: metrics.heldForQuietHours()
        case .pushed: break
        }
        for sink in sinks where sink.push(frame) == .becameSlow {
            metrics.slowClient()
        }
    }

    private enum Delivered { case pushed, repeated, held }

    /// Counts a held notification and makes sure a summary goes out at `end`.
    private func hold(_ id: String, for user: String, until end: Int64, in entries: inout [String: Entry]) {
        entries[user]?.held.count += 1
        if entries[user]?.held.first == nil { entries[user]?.held.first = id }
        entries[user]?.held.last = id
        if entries[user]?.held.timer == nil { scheduleSummary(for: user, at: end, in: &entries) }
    }

    private func scheduleSummary(for user: String, at end: Int64, in entries: inout [String: Entry]) {
        entries[user]?.held.timer = Task { [weak self] in
            let wait = max(end - RepositoryClock.milliseconds() / 1000, 0)
            try? await Task.sleep(for: .seconds(wait) + .milliseconds(50))
            if Task.isCancelled { return }
            self?.quietHoursMayHaveEnded(for: user)
        }
    }

    /// Sets the user's quiet hours (read when the user's first connection
    /// opened, or changed since); held notifications are summed up at once
    /// when they are no longer on.
    func setQuietHours(_ quietHours: QuietHours?, for user: String) {
        entries.withLock { entries in entries[user]?.quietHours = quietHours }
        quietHoursMayHaveEnded(for: user)
    }

    /// Sends the summary of held notifications when the quiet hours are
    /// over (or were changed); looks again later when they are still on.
    private func quietHoursMayHaveEnded(for user: String) {
        let now = RepositoryClock.milliseconds() / 1000
        let (sinks, summary) = entries.withLock { entries -> ([any LiveSink], [UInt8]?) in
            guard let entry = entries[user], entry.held.count > 0 else { return ([], nil) }
            if let quiet = entry.quietHours, let end = quiet.end(ifQuietAt: now) {
                // Still on (a clock change, or new quiet hours): wait on.
                entries[user]?.held.timer?.cancel()
                scheduleSummary(for: user, at: end, in: &entries)
                return ([], nil)
            }
            entries[user]?.held.timer?.cancel()
            entries[user]?.held = HeldNotifications()
            var json = JSONWriterBridge()
            json.quietHoursSummary(count: entry.held.count, first: entry.held.first, last: entry.held.last)
            return (Array(entry.clients.values), json.bytes)
        }
        guard let summary else { return }
        for sink in sinks where sink.push(summary) == .becameSlow {
            metrics.slowClient()
        }
    }

    // MARK: Profile changes

    /// Notes that `user`'s (or a room's, by ``Room/owner``) clients were
    /// shown these actors: their profile changes are sent to them. Only
    /// while connected here.
    func noteActors(_ actors: some Sequence<String>, for user: String) {
        guard tracksActors else { return }
        entries.withLock { entries in
            guard entries[user] != nil else { return }
            for actor in actors { entries[user]?.actors.insert(actor) }
        }
    }

    /// Sends `frame` (`profile.updated` of `actor`) to every connection
    /// that was shown the actor; returns how many connections got it.
    @discardableResult
    func profileChanged(_ actor: String, frame: [UInt8]) -> Int {
        let sinks = entries.withLock { entries in
            entries.values.filter { $0.actors.contains(actor) }.flatMap { $0.clients.values }
        }
        for sink in sinks where sink.push(frame) == .becameSlow {
            metrics.slowClient()
        }
        return sinks.count
    }

    /// The `trigger_user` values in a frame (the notification's and its
    /// group's actors), found without parsing it: user ids need no escapes.
    static func triggerUsers(in frame: [UInt8]) -> [String] {
        let key = Array(#""trigger_user":""#.utf8)
        var found: [String] = []
        var index = 0
        let end = frame.count - key.count
        while index <= end {
            guard frame[index] == key[0], frame[index..<index + key.count].elementsEqual(key) else {
                index += 1
                continue
            }
            let start = index + key.count
            guard let close = frame[start...].firstIndex(of: UInt8(ascii: "\"")) else { break }
            found.append(String(decoding: frame[start..<close], as: UTF8.self))
            index = close + 1
        }
        return found
    }

    /// Users and connections currently attached (rooms not counted).
    var counts: (users: Int, connections: Int) {
        entries.withLock { entries in
            entries.reduce(into: (0, 0)) { counts, entry in
                guard !Self.isRoom(entry.key) else { return }
                counts.0 += 1
                counts.1 += entry.value.clients.count
            }
        }
    }

    /// Asks every connection to resume (``CloseReason/resume``): after a
    /// NATS reconnect, frames published while the gateway was away are in
    /// the store only. Each connection detaches itself as it closes.
    func resumeAll() -> Int {
        let sinks = entries.withLock { entries in entries.filter { !Self.isRoom($0.key) }.values.flatMap { $0.clients.values } }
        for sink in sinks { sink.close(.resume) }
        return sinks.count
    }

    /// Closes every connection (graceful shutdown) and drops the subscriptions.
    func closeAll() {
        let all = entries.withLock { entries -> [Entry] in
            defer {
                entries.removeAll()
                roomEntries.store(0, ordering: .relaxed)
            }
            return Array(entries.values)
        }
        for entry in all {
            entry.held.timer?.cancel()
            entry.subscription.unsubscribe()
            for sink in entry.clients.values { sink.close(.shutdown) }
        }
    }
}

/// The actors a user's (or room's) clients were shown, up to
/// ``capacity``; beyond that every profile change is theirs.
struct ActorInterest {
    static let capacity = 1_024
    private var actors: Set<String> = []
    private var all = false

    mutating func insert(_ actor: String) {
        guard !all else { return }
        if actors.count >= Self.capacity {
            all = true
            actors = []
        } else {
            actors.insert(actor)
        }
    }

    func contains(_ actor: String) -> Bool {
        all || actors.contains(actor)
    }
}

/// The last `capacity` keys seen, in a ring, kept as hashes (a collision
/// among 512 64-bit hashes is not a practical concern); storage is
/// allocated on the first insert, so an idle user costs nothing.
struct RecentKeys {
    /// A repeat comes at most about 12 s after the original (another
    /// worker publishing a dead worker's outbox: `orphanedOutboxAge` plus
    /// its check interval): 512 covers users receiving up to about 40
    /// notifications a second. The ring grows with use, so a user with few
    /// messages holds few keys.
    static let capacity = 512
    private var ring: [Int] = []
    private var next = 0
    private var members: Set<Int> = []

    /// Adds `key`; `false` when it is among the last `capacity` added.
    mutating func insert(_ key: String) -> Bool {
        let hash = key.hashValue
        guard !members.contains(hash) else { return false }
        if ring.count < Self.capacity {
            ring.append(hash)
        } else {
            members.remove(ring[next])
            ring[next] = hash
            next = (next + 1) % Self.capacity
        }
        members.insert(hash)
        return true
    }
}
