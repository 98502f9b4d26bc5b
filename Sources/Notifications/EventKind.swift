/// One row of the inbound event table (CONTRACT §1): the subject an event
/// arrives on decides its action, resource type and whether it creates or
/// retracts a notification. One code path serves every row.
public struct EventKind: Sendable, Hashable, CustomStringConvertible {
    /// What an event of this kind does.
    public enum Effect: Sendable, Hashable {
        /// Creates a notification (unless one with the same action key is live).
        case create
        /// Deletes the live notification with the same action key, if any.
        case retract
    }

    /// The subject without its prefix, e.g. `post.like`.
    public let name: String
    public let action: Int64
    public let resourceType: String
    public let effect: Effect

    public var description: String { name }

    /// Whether events of this kind fold into a group with others on the
    /// same resource (aggregation): likes and follows, not replies.
    public var aggregates: Bool {
        effect == .create && isGroupable
    }

    /// Likes, follows and their retractions: kinds whose notifications
    /// may be groups.
    public var isGroupable: Bool {
        action == 1 || action == 2 || action == 5
    }

    /// Every kind the worker accepts.
    public static let all: [EventKind] = [
        EventKind(name: "post.like", action: 1, resourceType: "POST", effect: .create),
        EventKind(name: "comment.like", action: 2, resourceType: "COMMENT", effect: .create),
        EventKind(name: "reply.post", action: 3, resourceType: "POST", effect: .create),
        EventKind(name: "reply.comment", action: 4, resourceType: "COMMENT", effect: .create),
        EventKind(name: "user.follow", action: 5, resourceType: "USER", effect: .create),
        EventKind(name: "post.unlike", action: 1, resourceType: "POST", effect: .retract),
        EventKind(name: "comment.unlike", action: 2, resourceType: "COMMENT", effect: .retract),
        EventKind(name: "user.unfollow", action: 5, resourceType: "USER", effect: .retract),
    ]

    private static let byName: [String: EventKind] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// The kind named `name` (`post.like`), if any.
    public static func named(_ name: String) -> EventKind? {
        byName[name]
    }
}

/// Maps inbound subjects to event kinds under one prefix.
public struct EventSubjects: Sendable, Hashable {
    /// The prefix before the kind, e.g. `notifications`.
    public let prefix: String

    public init(prefix: String) {
        self.prefix = prefix
    }

    /// The prefix of a consumed subject filter: `notifications.>` →
    /// `notifications`. A filter without a trailing `.>` keeps the default.
    public init(filter: String) {
        if filter.hasSuffix(".>") {
            self.prefix = String(filter.dropLast(2))
        } else if filter == ">" {
            self.prefix = ""
        } else {
            self.prefix = "notifications"
        }
    }

    /// The kind of an event published on `subject`, or `nil` when the
    /// subject is not in the table.
    public func kind(of subject: String) -> EventKind? {
        route(of: subject)?.kind
    }

    /// The kind of an event published on `subject` and, for
    /// `<prefix>.channel.<id>.<kind>` and `<prefix>.global.<kind>`, the
    /// room it is for; `nil` when the subject is not in the table.
    public func route(of subject: String) -> (kind: EventKind, room: Room?)? {
        let rest: Substring
        if prefix.isEmpty {
            rest = Substring(subject)
        } else {
            guard subject.utf8.count > prefix.utf8.count + 1, subject.hasPrefix(prefix) else { return nil }
            let tail = subject.dropFirst(prefix.count)
            guard tail.first == "." else { return nil }
            rest = tail.dropFirst()
        }
        if let kind = EventKind.named(String(rest)) { return (kind, nil) }
        if rest.hasPrefix("global.") {
            return EventKind.named(String(rest.dropFirst(7))).map { ($0, .global) }
        }
        if rest.hasPrefix("channel."), let dot = rest.dropFirst(8).firstIndex(of: ".") {
            guard let room = Room.channel(String(rest[rest.index(rest.startIndex, offsetBy: 8)..<dot])),
                  let kind = EventKind.named(String(rest[rest.index(after: dot)...])) else { return nil }
            return (kind, room)
        }
        return nil
    }

    /// What an update subject carries (enrichment).
    public enum UpdateKind: String, Sendable, Hashable, CaseIterable {
        /// `<prefix>.profile.updated`
        case profile = "profile.updated"
        /// `<prefix>.resource.updated`
        case resourceUpdated = "resource.updated"
        /// `<prefix>.resource.deleted`
        case resourceDeleted = "resource.deleted"
    }

    /// The update published on `subject`, if it is one of the update subjects.
    public func update(of subject: String) -> UpdateKind? {
        if prefix.isEmpty { return UpdateKind(rawValue: subject) }
        guard subject.hasPrefix(prefix), subject.utf8.count > prefix.utf8.count + 1 else { return nil }
        let tail = subject.dropFirst(prefix.count)
        guard tail.first == "." else { return nil }
        return UpdateKind(rawValue: String(tail.dropFirst()))
    }

    /// The full subject of `update`.
    public func subject(for update: UpdateKind) -> String {
        prefix.isEmpty ? update.rawValue : prefix + "." + update.rawValue
    }

    /// The full subject of `kind`, for `room` when given.
    public func subject(for kind: EventKind, room: Room? = nil) -> String {
        var name = kind.name
        if let room {
            name = (room == .global ? "global." : "channel." + room.name.dropFirst(8) + ".") + name
        }
        return prefix.isEmpty ? name : prefix + "." + name
    }
}

/// A broadcast room (CONTRACT-EXTENSIONS): `channel:<id>` for one
/// channel's audience, or `global` for everyone. A room's notifications
/// are stored once, in the room's own feed, and delivered to the clients
/// that joined it.
public struct Room: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// `channel:<id>` or `global`.
    public let name: String

    /// Everyone's room.
    public static let global = Room(name: "global")

    /// The room of channel `id`; `nil` unless `id` is 1–128 characters of
    /// `[A-Za-z0-9_-]` (it becomes a subject token).
    public static func channel(_ id: String) -> Room? {
        EventValidator.isValidUserID(id) ? Room(name: "channel:" + id) : nil
    }

    private init(name: String) {
        self.name = name
    }

    /// `channel:<id>` or `global`; `nil` for anything else.
    public init?(_ text: some StringProtocol) {
        if text == "global" {
            self = .global
        } else if text.hasPrefix("channel:"), let room = Room.channel(String(text.dropFirst(8))) {
            self = room
        } else {
            return nil
        }
    }

    /// The owner its notifications are stored under: `@<name>`, which no
    /// user id can be.
    public var owner: String { "@" + name }

    /// The room whose storage owner is `owner`, if it is one.
    public init?(owner: String) {
        guard owner.hasPrefix("@") else { return nil }
        self.init(owner.dropFirst())
    }

    /// `<prefix>.channel.<id>.notifications` or `<prefix>.global.notifications`.
    public func subject(prefix: String) -> String {
        let tokens = name.hasPrefix("channel:") ? "channel." + name.dropFirst(8) : name
        return prefix + "." + tokens + ".notifications"
    }

    public var description: String { name }

    public static func < (lhs: Room, rhs: Room) -> Bool { lhs.name < rhs.name }
}
