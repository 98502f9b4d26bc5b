import JSON
import KeyValueStore

/// What is known of a user as an actor: the fields a notification shows
/// beside `trigger_user`, and when they were current.
///
/// Events carry these fields; so does `notifications.profile.updated`.
/// The newest wins: information older than ``updatedAt`` never replaces it.
public struct ActorProfile: Sendable, Hashable {
    public var username: String?
    public var userPicture: String?
    public var userBio: String?
    /// Unix seconds: the event's `created_at` or the update's `updated_at`.
    public var updatedAt: Int64
    /// The account was deleted: every field is blank.
    public var deleted = false

    public init(username: String? = nil, userPicture: String? = nil, userBio: String? = nil, updatedAt: Int64, deleted: Bool = false) {
        self.username = deleted ? nil : username
        self.userPicture = deleted ? nil : userPicture
        self.userBio = deleted ? nil : userBio
        self.updatedAt = updatedAt
        self.deleted = deleted
    }

    /// The actor fields `event` carries, as of its `created_at`; `nil`
    /// when it carries none.
    init?(event: NotificationEvent) {
        guard event.username != nil || event.userPicture != nil || event.userBio != nil else { return nil }
        self.init(username: event.username, userPicture: event.userPicture, userBio: event.userBio, updatedAt: event.createdAt)
    }

    /// This profile with what `event` says on top, when the event is at
    /// least as new: a field it leaves out keeps its value (events fill
    /// in, they do not blank). `nil` when the event changes nothing.
    func updated(by event: NotificationEvent) -> ActorProfile? {
        guard let said = ActorProfile(event: event), said.updatedAt >= updatedAt else { return nil }
        var next = deleted ? said : self
        next.deleted = false
        next.updatedAt = said.updatedAt
        if let username = said.username { next.username = username }
        if let picture = said.userPicture { next.userPicture = picture }
        if let bio = said.userBio { next.userBio = bio }
        return next == self ? nil : next
    }

    var attributes: [String: AttributeValue] {
        var attributes: [String: AttributeValue] = ["updated_at": .integer(updatedAt)]
        if let username { attributes["username"] = .string(username) }
        if let userPicture { attributes["user_picture"] = .string(userPicture) }
        if let userBio { attributes["user_bio"] = .string(userBio) }
        if deleted { attributes["deleted"] = .bool(true) }
        return attributes
    }

    init?(attributes: [String: AttributeValue]) {
        guard let updatedAt = attributes["updated_at"]?.integerValue else { return nil }
        self.init(
            username: attributes["username"]?.stringValue, userPicture: attributes["user_picture"]?.stringValue,
            userBio: attributes["user_bio"]?.stringValue, updatedAt: updatedAt, deleted: attributes["deleted"]?.boolValue ?? false)
    }

    /// `{"username":…,"user_picture":…,"user_bio":…,"updated_at":…}`, or
    /// `{"deleted":true,"updated_at":…}`; pictures through `pictures`.
    func write(to json: inout JSONWriter, pictures: PictureURLs) {
        json.raw("{")
        if deleted { json.key("deleted"); json.bool(true); json.raw(",") }
        if let username { json.key("username"); json.string(username); json.raw(",") }
        if let userPicture { json.key("user_picture"); json.string(pictures.absolute(userPicture)); json.raw(",") }
        if let userBio { json.key("user_bio"); json.string(userBio); json.raw(",") }
        json.key("updated_at"); json.integer(updatedAt)
        json.raw("}")
    }
}

/// `notifications.profile.updated`: a user's profile as of `updated_at`.
/// It replaces the stored one when newer: a field it leaves out is blank.
public struct ProfileUpdate: Sendable, Hashable {
    public let user: String
    public let profile: ActorProfile

    public init(user: String, profile: ActorProfile) {
        self.user = user
        self.profile = profile
    }
}

/// A resource notifications are about: a post, a comment, a user.
public struct ResourceReference: Sendable, Hashable, CustomStringConvertible {
    /// `POST`, `COMMENT` or `USER`.
    public let type: String
    public let id: String

    public init(type: String, id: String) {
        self.type = type
        self.id = id
    }

    public var description: String { type + " " + id }

    /// The resource types of the event table.
    static let types: Set<String> = Set(EventKind.all.map(\.resourceType))
}

/// What a resource looks like now: its title and excerpt, as of `updated_at`.
public struct ResourcePreview: Sendable, Hashable {
    public var title: String?
    public var excerpt: String?
    /// Unix seconds.
    public var updatedAt: Int64
    /// The resource was deleted: its notifications are retracted, and
    /// events about it create none.
    public var deleted = false

    public init(title: String? = nil, excerpt: String? = nil, updatedAt: Int64, deleted: Bool = false) {
        self.title = deleted ? nil : title
        self.excerpt = deleted ? nil : excerpt
        self.updatedAt = updatedAt
        self.deleted = deleted
    }

    var attributes: [String: AttributeValue] {
        var attributes: [String: AttributeValue] = ["updated_at": .integer(updatedAt)]
        if let title { attributes["title"] = .string(title) }
        if let excerpt { attributes["excerpt"] = .string(excerpt) }
        if deleted { attributes["deleted"] = .bool(true) }
        return attributes
    }

    init?(attributes: [String: AttributeValue]) {
        guard let updatedAt = attributes["updated_at"]?.integerValue else { return nil }
        self.init(
            title: attributes["title"]?.stringValue, excerpt: attributes["excerpt"]?.stringValue, updatedAt: updatedAt,
            deleted: attributes["deleted"]?.boolValue ?? false)
    }
}

/// `notifications.resource.updated` or `.deleted`: a resource as of
/// `updated_at`, replacing the stored one when newer.
public struct ResourceUpdate: Sendable, Hashable {
    public let resource: ResourceReference
    public let preview: ResourcePreview

    public init(resource: ResourceReference, preview: ResourcePreview) {
        self.resource = resource
        self.preview = preview
    }
}

/// An inbound event that changes what notifications show rather than
/// making one: a profile or a resource.
public enum EnrichmentUpdate: Sendable, Hashable {
    case profile(ProfileUpdate)
    case resource(ResourceUpdate)

    /// When the update was true (Unix seconds).
    var updatedAt: Int64 {
        switch self {
        case .profile(let update): update.profile.updatedAt
        case .resource(let update): update.preview.updatedAt
        }
    }
}

/// What the worker takes from the inbound subjects.
public enum InboundEvent: Sendable, Hashable {
    /// A row of the event table (CONTRACT §1).
    case notification(NotificationEvent)
    /// A profile or resource update.
    case update(EnrichmentUpdate)
}

/// What applying an ``EnrichmentUpdate`` did.
public enum UpdateOutcome: Sendable, Hashable {
    /// The stored profile or resource changed.
    case applied
    /// What is stored is as new or newer: nothing changed.
    case stale
}

/// Turns picture paths into URLs on output (`CDN_BASE_URL`): a path
/// (`/avatars/456.jpg`) becomes `<base>/avatars/456.jpg`; an absolute
/// `http(s)` URL passes unchanged. Pictures are stored as events sent
/// them, so a new CDN takes effect on every notification at once.
public struct PictureURLs: Sendable, Hashable {
    /// `https://cdn.example.com`, without a trailing `/`; `nil` when paths
    /// are not accepted (CONTRACT §1: absolute URLs only).
    public let base: String?

    public init(base: String? = nil) {
        self.base = base.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    /// Whether `picture` is a path to resolve against the base: it begins
    /// with one `/` (`//host/…` is a network-path reference, not a path).
    static func isPath(_ picture: String) -> Bool {
        picture.utf8.first == UInt8(ascii: "/") && !picture.hasPrefix("//")
    }

    /// `picture` as clients should load it.
    public func absolute(_ picture: String) -> String {
        guard let base, Self.isPath(picture) else { return picture }
        return base + picture
    }

    /// `record` with every picture absolute.
    public func absolute(_ record: NotificationRecord) -> NotificationRecord {
        guard base != nil else { return record }
        var record = record
        record.userPicture = record.userPicture.map(absolute)
        if var group = record.group {
            group.actors = group.actors.map(absolute)
            record.group = group
        }
        return record
    }

    /// `actor` with its picture absolute.
    public func absolute(_ actor: GroupActor) -> GroupActor {
        guard base != nil, let picture = actor.userPicture else { return actor }
        var actor = actor
        actor.userPicture = absolute(picture)
        return actor
    }
}
