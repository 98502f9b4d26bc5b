import JSON
import KeyValueStore

/// A stored notification: the event's fields (less `event_id`) plus its id,
/// action key, read flag and receive time (CONTRACT §3). An aggregated
/// notification also has its ``group``; its event fields are those of the
/// group's newest actor.
public struct NotificationRecord: Sendable, Hashable {
    public internal(set) var id: String
    public let owner: String
    public internal(set) var triggerUser: String
    public internal(set) var username: String?
    public internal(set) var userPicture: String?
    public internal(set) var userBio: String?
    public let action: Int64
    public let resourceType: String
    public internal(set) var resourceID: String
    public internal(set) var excerpt: String?
    public internal(set) var createdAt: Int64
    public internal(set) var actionKey: String
    public var read: Bool
    /// Unix milliseconds when the worker stored it.
    public internal(set) var receivedAt: Int64
    /// The event's `priority` (`normal` unless it said otherwise).
    public internal(set) var priority: NotificationEvent.Priority = .normal
    /// The actors folded into this notification (aggregation), or `nil`.
    public internal(set) var group: NotificationGroup?
    /// Unix milliseconds when a client first acknowledged receiving it,
    /// showed it (`seen`), and it was marked read; `nil` until then.
    public internal(set) var deliveredAt: Int64?
    public internal(set) var seenAt: Int64?
    public internal(set) var readAt: Int64?
    /// Rendered from the in-app templates of its kind (`TEMPLATES_DIR`),
    /// so clients need not render; `nil` when the worker has no templates.
    public internal(set) var title: String?
    public internal(set) var body: String?
    /// The resource's current title (enrichment), when it has one; not
    /// stored with the notification.
    public internal(set) var resourceTitle: String?
    /// How delivery through each external channel went (email, Web Push,
    /// webhook), in channel order; empty when none was tried.
    public internal(set) var deliveries: [ChannelDelivery] = []

    /// Where the notification is in its life: `created`, `delivered`,
    /// `seen` or `read`.
    public var state: String {
        if read { return "read" }
        if seenAt != nil { return "seen" }
        if deliveredAt != nil { return "delivered" }
        return "created"
    }

    public init(event: NotificationEvent, id: String, receivedAt: Int64) {
        self.id = id
        owner = event.owner
        triggerUser = event.triggerUser
        username = event.username
        userPicture = event.userPicture
        userBio = event.userBio
        action = event.action
        resourceType = event.resourceType
        resourceID = event.resourceID
        excerpt = event.excerpt
        createdAt = event.createdAt
        actionKey = event.actionKey
        read = false
        self.receivedAt = receivedAt
        priority = event.priority
    }

    /// Makes `actor` the one the event fields show (the group's newest).
    mutating func show(_ actor: GroupActor) {
        triggerUser = actor.triggerUser
        username = actor.username
        userPicture = actor.userPicture
        userBio = actor.userBio
        createdAt = actor.createdAt
        actionKey = "\(action)#\(resourceType)#\(resourceID)#\(actor.triggerUser)"
    }

    /// The record's attributes as stored (same names as its JSON).
    var attributes: [String: AttributeValue] {
        var attributes: [String: AttributeValue] = [
            "id": .string(id), "owner": .string(owner), "trigger_user": .string(triggerUser),
            "action": .integer(action), "resource_type": .string(resourceType), "resource_id": .string(resourceID),
            "created_at": .integer(createdAt), "action_key": .string(actionKey), "read": .bool(read),
            "received_at": .integer(receivedAt),
        ]
        if let username { attributes["username"] = .string(username) }
        if let userPicture { attributes["user_picture"] = .string(userPicture) }
        if let userBio { attributes["user_bio"] = .string(userBio) }
        if let excerpt { attributes["excerpt"] = .string(excerpt) }
        if priority != .normal { attributes["priority"] = .string(priority.rawValue) }
        if let deliveredAt { attributes["delivered_at"] = .integer(deliveredAt) }
        if let seenAt { attributes["seen_at"] = .integer(seenAt) }
        if let readAt { attributes["read_at"] = .integer(readAt) }
        if let title { attributes["title"] = .string(title) }
        if let body { attributes["body"] = .string(body) }
        for delivery in deliveries { attributes[ChannelDelivery.attributeName(delivery.channel)] = delivery.attribute }
        if let group {
            // A group's first notification, with one actor, is stored as
            // small as a plain one: the group id and actor are its own.
            attributes["actor_count"] = .integer(group.actorCount)
            if group.id != id { attributes["group_id"] = .string(group.id) }
            if group.throttled { attributes["throttled"] = .bool(true) }
            if group.actorCount != 1 || group.actors.count != 1 || group.actors[0].joined != id {
                attributes["actors"] = .list(group.actors.map { .map($0.attributes) })
            }
        }
        return attributes
    }

    /// Reads a stored record; `nil` when an attribute is missing or mistyped.
    init?(attributes: [String: AttributeValue]) {
        guard let id = attributes["id"]?.stringValue, let owner = attributes["owner"]?.stringValue,
              let triggerUser = attributes["trigger_user"]?.stringValue, let action = attributes["action"]?.integerValue,
              let resourceType = attributes["resource_type"]?.stringValue, let resourceID = attributes["resource_id"]?.stringValue,
              let createdAt = attributes["created_at"]?.integerValue, let actionKey = attributes["action_key"]?.stringValue,
              let read = attributes["read"]?.boolValue, let receivedAt = attributes["received_at"]?.integerValue
        else { return nil }
        self.id = id
        self.owner = owner
        self.triggerUser = triggerUser
        self.action = action
        self.resourceType = resourceType
        self.resourceID = resourceID
        self.createdAt = createdAt
        self.actionKey = actionKey
        self.read = read
        self.receivedAt = receivedAt
        username = attributes["username"]?.stringValue
        userPicture = attributes["user_picture"]?.stringValue
        userBio = attributes["user_bio"]?.stringValue
        excerpt = attributes["excerpt"]?.stringValue
        priority = attributes["priority"]?.stringValue.flatMap(NotificationEvent.Priority.init(rawValue:)) ?? .normal
        deliveredAt = attributes["delivered_at"]?.integerValue
        seenAt = attributes["seen_at"]?.integerValue
        readAt = attributes["read_at"]?.integerValue
        title = attributes["title"]?.stringValue
        body = attributes["body"]?.stringValue
        deliveries = DeliveryChannel.allCases.compactMap {
            ChannelDelivery(channel: $0, attribute: attributes[ChannelDelivery.attributeName($0)])
        }
        if let count = attributes["actor_count"]?.integerValue {
            var actors: [GroupActor] = []
            if case .list(let list)? = attributes["actors"] {
                for case .map(let fields) in list {
                    guard let actor = GroupActor(attributes: fields) else { return nil }
                    actors.append(actor)
                }
            } else {
                actors = [GroupActor(self)]
            }
            group = NotificationGroup(
                id: attributes["group_id"]?.stringValue ?? id, actorCount: count, actors: actors,
                throttled: attributes["throttled"]?.boolValue ?? false)
        }
    }

    /// The room this notification was broadcast to, if any.
    public var room: Room? { Room(owner: owner) }

    /// The record as a JSON object.
    func write(to json: inout JSONWriter) {
        json.raw("{")
        json.key("id"); json.string(id)
        if let room {
            // A room's notification: `owner` names the room as well.
            json.raw(","); json.key("owner"); json.string(room.name)
            json.raw(","); json.key("room"); json.string(room.name)
        } else {
            json.raw(","); json.key("owner"); json.string(owner)
        }
        json.raw(","); json.key("trigger_user"); json.string(triggerUser)
        if let username { json.raw(","); json.key("username"); json.string(username) }
        if let userPicture { json.raw(","); json.key("user_picture"); json.string(userPicture) }
        if let userBio { json.raw(","); json.key("user_bio"); json.string(userBio) }
        json.raw(","); json.key("action"); json.integer(action)
        json.raw(","); json.key("resource_type"); json.string(resourceType)
        json.raw(","); json.key("resource_id"); json.string(resourceID)
        if let excerpt { json.raw(","); json.key("excerpt"); json.string(excerpt) }
        if let resourceTitle { json.raw(","); json.key("resource_title"); json.string(resourceTitle) }
        if let title { json.raw(","); json.key("title"); json.string(title) }
        if let body { json.raw(","); json.key("body"); json.string(body) }
        json.raw(","); json.key("created_at"); json.integer(createdAt)
        json.raw(","); json.key("action_key"); json.string(actionKey)
        json.raw(","); json.key("read"); json.bool(read)
        json.raw(","); json.key("received_at"); json.integer(receivedAt)
        json.raw(","); json.key("state"); json.string(state)
        if priority != .normal { json.raw(","); json.key("priority"); json.string(priority.rawValue) }
        if let deliveredAt { json.raw(","); json.key("delivered_at"); json.integer(deliveredAt) }
        if let seenAt { json.raw(","); json.key("seen_at"); json.integer(seenAt) }
        if let readAt { json.raw(","); json.key("read_at"); json.integer(readAt) }
        if !deliveries.isEmpty {
            json.raw(","); json.key("deliveries"); json.raw("[")
            for (index, delivery) in deliveries.enumerated() {
                if index > 0 { json.raw(",") }
                delivery.write(to: &json)
            }
            json.raw("]")
        }
        if let group {
            json.raw(","); json.key("group_id"); json.string(group.id)
            json.raw(","); json.key("actor_count"); json.integer(group.actorCount)
            if group.throttled { json.raw(","); json.key("throttled"); json.bool(true) }
            json.raw(","); json.key("actors"); json.raw("[")
            for (index, actor) in group.actors.enumerated() {
                if index > 0 { json.raw(",") }
                actor.write(to: &json)
            }
            json.raw("]")
        }
        json.raw("}")
    }

    /// The record as JSON bytes.
    public var json: [UInt8] {
        var writer = JSONWriter()
        write(to: &writer)
        return writer.bytes
    }
}

/// The subjects the worker publishes changes on: a user's
/// (`USER_SUBJECT_PREFIX`, CONTRACT §3) and a room's (`ROOM_SUBJECT_PREFIX`).
public struct OutboundSubjects: Sendable, Hashable {
    /// `<users>.<user>.notifications`
    public var users: String
    /// `<rooms>.channel.<id>.notifications`, `<rooms>.global.notifications`
    public var rooms: String

    /// `<profiles>.<user>.updated`: a user's profile changed (enrichment).
    public var profiles: String
    /// `<resources>.updated`: a resource changed or was deleted.
    public var resources: String

    /// Where each new notification of a user is announced to the
    /// dispatcher (`delivery.dispatch`, captured by the delivery stream);
    /// `nil` when no external channel is on.
    public var dispatch: String?

    public init(users: String = "users", rooms: String = "rooms", profiles: String = "profiles", resources: String = "resources", dispatch: String? = nil) {
        self.users = users
        self.rooms = rooms
        self.profiles = profiles
        self.resources = resources
        self.dispatch = dispatch
    }

    /// `<profiles>.<user>.updated`; `user` must be a valid user id.
    public func profile(_ user: String) -> String { profiles + "." + user + ".updated" }

    /// `<resources>.updated`
    public var resourceUpdates: String { resources + ".updated" }

    /// The subject of a notification owner: a user, or a room's storage
    /// owner (``Room/owner``).
    public func subject(owner: String) -> String {
        if let room = Room(owner: owner) { return room.subject(prefix: rooms) }
        return OutboundMessage.userSubject(owner, prefix: users)
    }
}

/// A message for one user's (or room's) subject (CONTRACT §3). A room's
/// messages name the room right after their type:
/// `{"type":"notification.created","room":"global","notification":{…}}`.
public struct OutboundMessage: Sendable, Hashable {
    public let subject: String
    public let body: [UInt8]

    public init(subject: String, body: [UInt8]) {
        self.subject = subject
        self.body = body
    }

    /// `{"type":"notification.created","notification":{…}}`
    public static func created(_ record: NotificationRecord, subjects: OutboundSubjects) -> OutboundMessage {
        var json = JSONWriter()
        json.raw("{\"type\":\"notification.created\",")
        roomField(owner: record.owner, &json)
        json.raw("\"notification\":")
        record.write(to: &json)
        json.raw("}")
        return OutboundMessage(subject: subjects.subject(owner: record.owner), body: json.bytes)
    }

    /// `{"type":"notification.updated","notification":{…},"replaces":"…"}`:
    /// an aggregated notification changed. `replaces` (when its id changed,
    /// because an actor joined and it moved to the top) is the id it had.
    public static func updated(_ record: NotificationRecord, replaces: String?, subjects: OutboundSubjects) -> OutboundMessage {
        var json = JSONWriter()
        json.raw("{\"type\":\"notification.updated\",")
        roomField(owner: record.owner, &json)
        json.raw("\"notification\":")
        record.write(to: &json)
        if let replaces {
            json.raw(",\"replaces\":")
            json.string(replaces)
        }
        json.raw("}")
        return OutboundMessage(subject: subjects.subject(owner: record.owner), body: json.bytes)
    }

    /// `{"type":"notification.deleted","id":"…"}`
    public static func deleted(id: String, owner: String, subjects: OutboundSubjects) -> OutboundMessage {
        var json = JSONWriter(capacity: 80)
        json.raw("{\"type\":\"notification.deleted\",")
        roomField(owner: owner, &json)
        json.raw("\"id\":")
        json.string(id)
        json.raw("}")
        return OutboundMessage(subject: subjects.subject(owner: owner), body: json.bytes)
    }

    /// `"room":"<name>",` for a room's message.
    private static func roomField(owner: String, _ json: inout JSONWriter) {
        guard let room = Room(owner: owner) else { return }
        json.raw("\"room\":")
        json.string(room.name)
        json.raw(",")
    }

    /// `{"type":"notification.read","ids":[…]}`
    public static func read(ids: [String], owner: String, prefix: String) -> OutboundMessage {
        var json = JSONWriter(capacity: 40 + ids.count * 30)
        json.raw("{\"type\":\"notification.read\",\"ids\":[")
        for (index, id) in ids.enumerated() {
            if index > 0 { json.raw(",") }
            json.string(id)
        }
        json.raw("]}")
        return OutboundMessage(subject: userSubject(owner, prefix: prefix), body: json.bytes)
    }

    /// `{"owner":…,"id":…}` on `subject`: a new notification of a user,
    /// for the dispatcher to deliver through the user's channels.
    public static func dispatch(owner: String, id: String, subject: String) -> OutboundMessage {
        var json = JSONWriter(capacity: 64 + owner.utf8.count)
        json.raw("{\"owner\":")
        json.string(owner)
        json.raw(",\"id\":")
        json.string(id)
        json.raw("}")
        return OutboundMessage(subject: subject, body: json.bytes)
    }

    /// `{"type":"profile.updated","user":…,"profile":{…}}`: what a user
    /// shows as an actor changed.
    public static func profileUpdated(user: String, _ profile: ActorProfile, subjects: OutboundSubjects, pictures: PictureURLs) -> OutboundMessage {
        var json = JSONWriter(capacity: 256)
        json.raw("{\"type\":\"profile.updated\",\"user\":")
        json.string(user)
        json.raw(",\"profile\":")
        profile.write(to: &json, pictures: pictures)
        json.raw("}")
        return OutboundMessage(subject: subjects.profile(user), body: json.bytes)
    }

    /// `{"type":"resource.updated","resource":{"resource_type":…,"resource_id":…,…}}`:
    /// a resource's title or excerpt changed, or it was deleted.
    public static func resourceUpdated(_ resource: ResourceReference, _ preview: ResourcePreview, subjects: OutboundSubjects) -> OutboundMessage {
        var json = JSONWriter(capacity: 512)
        json.raw("{\"type\":\"resource.updated\",\"resource\":{")
        json.key("resource_type"); json.string(resource.type)
        json.raw(","); json.key("resource_id"); json.string(resource.id)
        if preview.deleted { json.raw(","); json.key("deleted"); json.bool(true) }
        if let title = preview.title { json.raw(","); json.key("title"); json.string(title) }
        if let excerpt = preview.excerpt { json.raw(","); json.key("excerpt"); json.string(excerpt) }
        json.raw(","); json.key("updated_at"); json.integer(preview.updatedAt)
        json.raw("}}")
        return OutboundMessage(subject: subjects.resourceUpdates, body: json.bytes)
    }

    /// `<prefix>.<owner>.notifications`; `owner` must be a valid user id.
    public static func userSubject(_ owner: String, prefix: String) -> String {
        prefix + "." + owner + ".notifications"
    }
}

/// The actors folded into an aggregated notification.
public struct NotificationGroup: Sendable, Hashable {
    /// Stays the same while actors join and leave (the id of the group's
    /// first notification): clients keep one entry per group.
    public let id: String
    /// Every actor in the group.
    public internal(set) var actorCount: Int64
    /// The newest actors, newest first (at most ``shown``); the others are
    /// stored apart and read page by page.
    public internal(set) var actors: [GroupActor]

    /// An overflow group: events folded because the owner or a trigger
    /// user was over its rate, across resources (`actor_count` counts
    /// events; the resource fields are the newest event's).
    public internal(set) var throttled = false

    /// How many actors a notification carries.
    public static let shown = 3
}

/// One actor of a group: who, and when they joined it.
public struct GroupActor: Sendable, Hashable {
    public let triggerUser: String
    /// As the actor's event said, or their current profile on reading.
    public internal(set) var username: String?
    public internal(set) var userPicture: String?
    public internal(set) var userBio: String?
    public let createdAt: Int64
    /// The notification id drawn when the actor joined: orders actors
    /// newest first, and is the cursor of the actor pages.
    public let joined: String

    init(event: NotificationEvent, joined: String) {
        triggerUser = event.triggerUser
        username = event.username
        userPicture = event.userPicture
        userBio = event.userBio
        createdAt = event.createdAt
        self.joined = joined
    }

    /// The one actor of a notification that is not a group.
    init(_ record: NotificationRecord) {
        triggerUser = record.triggerUser
        username = record.username
        userPicture = record.userPicture
        userBio = record.userBio
        createdAt = record.createdAt
        joined = record.id
    }

    var attributes: [String: AttributeValue] {
        var attributes: [String: AttributeValue] = [
            "trigger_user": .string(triggerUser), "created_at": .integer(createdAt), "joined": .string(joined),
        ]
        if let username { attributes["username"] = .string(username) }
        if let userPicture { attributes["user_picture"] = .string(userPicture) }
        if let userBio { attributes["user_bio"] = .string(userBio) }
        return attributes
    }

    init?(attributes: [String: AttributeValue]) {
        guard let triggerUser = attributes["trigger_user"]?.stringValue, let createdAt = attributes["created_at"]?.integerValue,
              let joined = attributes["joined"]?.stringValue else { return nil }
        self.triggerUser = triggerUser
        self.createdAt = createdAt
        self.joined = joined
        username = attributes["username"]?.stringValue
        userPicture = attributes["user_picture"]?.stringValue
        userBio = attributes["user_bio"]?.stringValue
    }

    /// `{"trigger_user":…,"username":…,"user_picture":…,"user_bio":…,"created_at":…}`
    func write(to json: inout JSONWriter) {
        json.raw("{"); json.key("trigger_user"); json.string(triggerUser)
        if let username { json.raw(","); json.key("username"); json.string(username) }
        if let userPicture { json.raw(","); json.key("user_picture"); json.string(userPicture) }
        if let userBio { json.raw(","); json.key("user_bio"); json.string(userBio) }
        json.raw(","); json.key("created_at"); json.integer(createdAt)
        json.raw("}")
    }

    /// The actor as JSON bytes.
    public var json: [UInt8] {
        var writer = JSONWriter()
        write(to: &writer)
        return writer.bytes
    }
}

/// Renders a notification's in-app `title` and `body` (the templates of
/// its kind); the worker stores them on the record.
public protocol NotificationTexts: Sendable {
    /// The title and body of `record` as it is now; `nil` for none.
    func inApp(_ record: NotificationRecord) -> (title: String, body: String)?
}
