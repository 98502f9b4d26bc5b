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
        if prefix.isEmpty { return EventKind.named(subject) }
        guard subject.utf8.count > prefix.utf8.count + 1, subject.hasPrefix(prefix) else { return nil }
        let rest = subject.utf8.dropFirst(prefix.utf8.count)
        guard rest.first == UInt8(ascii: ".") else { return nil }
        return EventKind.named(String(decoding: rest.dropFirst(), as: UTF8.self))
    }

    /// The full subject of `kind`.
    public func subject(for kind: EventKind) -> String {
        prefix.isEmpty ? kind.name : prefix + "." + kind.name
    }
}
