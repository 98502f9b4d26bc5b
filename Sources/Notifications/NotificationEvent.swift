import Foundation
import JSON

/// An inbound event that passed every rule of CONTRACT §1.
public struct NotificationEvent: Sendable, Hashable {
    public let kind: EventKind
    /// Who is notified: a user id, or a room's storage owner
    /// (``Room/owner``, `@<room>`) for a room event.
    public let owner: String
    /// Who acted.
    public let triggerUser: String
    /// The actor fields: as the event said, or filled from the actor's
    /// profile when it is newer (enrichment).
    public internal(set) var username: String?
    public internal(set) var userPicture: String?
    public internal(set) var userBio: String?
    public let action: Int64
    public let resourceType: String
    public let resourceID: String
    /// At most 280 extended grapheme clusters.
    public let excerpt: String?
    /// Unix seconds, as the publisher said.
    public let createdAt: Int64
    public let eventID: String?
    /// `priority`: high goes first within a batch and through quiet hours.
    public internal(set) var priority: Priority = .normal
    /// `deliver_at`: Unix seconds to release the notification at, when in
    /// the future (at most 30 days ahead).
    public internal(set) var deliverAt: Int64? = nil

    /// An event's `priority`.
    public enum Priority: String, Sendable, Hashable {
        case high, normal, low
    }

    /// How far ahead `deliver_at` may be.
    public static let maxSchedule: Int64 = 30 * 86_400

    /// `action#resource_type#resource_id#trigger_user`, unique per owner
    /// among live notifications. Unambiguous: only `resource_id` may contain
    /// `#`, and `trigger_user` (last) never does.
    public var actionKey: String { "\(action)#\(resourceType)#\(resourceID)#\(triggerUser)" }

    /// Nobody is notified of their own action.
    public var isSelfNotification: Bool { owner.utf8.elementsEqual(triggerUser.utf8) }

    /// The room this event is for, when it came on a room subject.
    public var room: Room? { Room(owner: owner) }
}

/// Why an event was rejected: the reason code of CONTRACT §1/§4.
public enum RejectionReason: String, Sendable, Hashable, CaseIterable {
    case invalidJSON = "invalid_json"
    case tooLarge = "too_large"
    case missingField = "missing_field"
    case invalidField = "invalid_field"
    case actionMismatch = "action_mismatch"
    case unknownSubject = "unknown_subject"
    case storeFailed = "store_failed"
}

/// A rejected event: the reason code and a one-line explanation that names
/// the field (never the payload).
public struct EventRejection: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: RejectionReason
    public let detail: String

    public init(_ reason: RejectionReason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}

/// Decodes and validates event bodies (CONTRACT §1).
///
/// Checks run in a fixed order so the reason is predictable: the subject,
/// the size, UTF-8 and JSON syntax, then every required field for presence
/// (`missing_field`), then each field's type and rule in table order
/// (`invalid_field`), and last whether `action` and `resource_type` match
/// the subject (`action_mismatch`).
public struct EventValidator: Sendable {
    /// Largest accepted body, in bytes (64 KiB).
    public static let maxBodyBytes = 65_536
    /// Earliest accepted `created_at` (2000-01-01T00:00:00Z).
    public static let earliestCreatedAt: Int64 = 946_684_800
    /// How far in the future `created_at` may be, in seconds.
    public static let maxClockSkew: Int64 = 86_400
    /// Length of a stored excerpt, in extended grapheme clusters.
    public static let excerptLength = 280

    public let subjects: EventSubjects
    /// With a CDN base, `user_picture` may also be a path (`/avatars/1.jpg`).
    public let pictures: PictureURLs
    /// Whether profile and resource updates are taken (enrichment on);
    /// otherwise their subjects are unknown.
    public let acceptsUpdates: Bool

    public init(subjects: EventSubjects, pictures: PictureURLs = PictureURLs(), acceptsUpdates: Bool = false) {
        self.subjects = subjects
        self.pictures = pictures
        self.acceptsUpdates = acceptsUpdates
    }

    private static let required = ["owner", "trigger_user", "action", "resource_type", "resource_id", "created_at"]

    /// The event in `body` published on `subject`, judged at `now` (Unix
    /// seconds); a profile or resource update is an unknown subject here.
    public func validate(subject: String, body: [UInt8], now: Int64) -> Result<NotificationEvent, EventRejection> {
        do throws(EventRejection) {
            guard let (kind, room) = subjects.route(of: subject) else { throw unknown(subject) }
            return .success(try decode(subject: subject, kind: kind, room: room, object: try object(body), now: now))
        } catch {
            return .failure(error)
        }
    }

    /// The event or update in `body` published on `subject`, judged at
    /// `now` (Unix seconds).
    public func validateInbound(subject: String, body: [UInt8], now: Int64) -> Result<InboundEvent, EventRejection> {
        do throws(EventRejection) {
            if let (kind, room) = subjects.route(of: subject) {
                return .success(.notification(try decode(subject: subject, kind: kind, room: room, object: try object(body), now: now)))
            }
            guard acceptsUpdates, let update = subjects.update(of: subject) else { throw unknown(subject) }
            return .success(.update(try decode(update, object: try object(body), now: now)))
        } catch {
            return .failure(error)
        }
    }

    private func unknown(_ subject: String) -> EventRejection {
        EventRejection(.unknownSubject, "subject \(subject) is not one of the event subjects")
    }

    /// The JSON object in `body`: size, UTF-8 and syntax checked.
    private func object(_ body: [UInt8]) throws(EventRejection) -> [String: JSONValue] {
        guard body.count <= Self.maxBodyBytes else {
            throw EventRejection(.tooLarge, "body is \(body.count) bytes, the limit is \(Self.maxBodyBytes)")
        }
        guard String(validating: body, as: UTF8.self) != nil else {
            throw EventRejection(.invalidJSON, "body is not valid UTF-8")
        }
        let document: JSONValue
        do throws(JSONSyntaxError) {
            document = try JSONParser.parse(body)
        } catch {
            throw EventRejection(.invalidJSON, "\(error.message) at byte \(error.offset)")
        }
        guard case .object(let object) = document else {
            throw EventRejection(.invalidJSON, "body is a JSON \(document.typeName), not an object")
        }
        return object
    }

    private func decode(
        subject: String, kind: EventKind, room: Room?, object: [String: JSONValue], now: Int64
    ) throws(EventRejection) -> NotificationEvent {
        for name in Self.required where room == nil || name != "owner" {
            switch object[name] {
            case nil, .null?: throw EventRejection(.missingField, "\(name) is required")
            default: continue
            }
        }
        let fields = Fields(object: object)
        let owner: String
        if let room {
            // The room is the audience; an owner would say otherwise.
            guard object["owner"] == nil || object["owner"] == .null else {
                throw fields.invalid("owner", "must be absent on a room event (\(room)): the room is the audience")
            }
            owner = room.owner
        } else {
            owner = try fields.userID("owner")
        }
        let triggerUser = try fields.userID("trigger_user")
        let action = try fields.integer("action")
        let resourceType = try fields.string("resource_type")
        let resourceID = try resourceID(fields)
        let createdAt = try fields.time("created_at", now: now)
        let (username, userPicture, userBio) = try actorFields(fields)
        let excerpt = try fields.optionalString("excerpt", maxLength: nil).map { String($0.prefix(Self.excerptLength)) }
        let eventID = try fields.optionalString("event_id", maxLength: 128)
        var priority = NotificationEvent.Priority.normal
        switch object["priority"] {
        case nil, .null?: break
        case .string(let text)?:
            guard let value = NotificationEvent.Priority(rawValue: text) else { throw fields.invalid("priority", "must be high, normal or low") }
            priority = value
        default: throw fields.invalid("priority", "must be a string: high, normal or low")
        }
        var deliverAt: Int64?
        switch object["deliver_at"] {
        case nil, .null?: break
        case .integer(let value)?:
            guard value <= now + NotificationEvent.maxSchedule else {
                throw fields.invalid("deliver_at", "must be at most 30 days (\(NotificationEvent.maxSchedule) s) ahead")
            }
            // A time already passed: now.
            if value > now { deliverAt = value }
        default: throw fields.invalid("deliver_at", "must be Unix seconds (an integer)")
        }

        guard action == kind.action else {
            throw EventRejection(.actionMismatch, "action \(action) does not match subject \(subject) (action \(kind.action))")
        }
        guard resourceType == kind.resourceType else {
            throw EventRejection(.actionMismatch, "resource_type \(resourceType.prefix(32)) does not match subject \(subject) (\(kind.resourceType))")
        }
        return NotificationEvent(
            kind: kind, owner: owner, triggerUser: triggerUser, username: username, userPicture: userPicture,
            userBio: userBio, action: action, resourceType: resourceType, resourceID: resourceID, excerpt: excerpt,
            createdAt: createdAt, eventID: eventID, priority: priority, deliverAt: deliverAt)
    }

    /// `username`, `user_picture` and `user_bio`, each checked.
    private func actorFields(_ fields: Fields) throws(EventRejection) -> (String?, String?, String?) {
        let username = try fields.optionalString("username", maxLength: 128)
        let userPicture = try fields.optionalString("user_picture", maxLength: 2048)
        if let userPicture, !Self.isWebURL(userPicture) {
            guard pictures.base != nil else {
                throw fields.invalid("user_picture", "must be an absolute http or https URL with a host (a path such as /avatars/1.jpg needs CDN_BASE_URL)")
            }
            guard Self.isPicturePath(userPicture) else {
                throw fields.invalid("user_picture", "must be an absolute http or https URL with a host, or a path beginning with a single /")
            }
        }
        let userBio = try fields.optionalString("user_bio", maxLength: 512)
        return (username, userPicture, userBio)
    }

    /// A profile or resource update (CONTRACT-EXTENSIONS, Enrichment):
    /// required fields for presence first, then each field's rule.
    private func decode(_ kind: EventSubjects.UpdateKind, object: [String: JSONValue], now: Int64) throws(EventRejection) -> EnrichmentUpdate {
        let required = kind == .profile ? ["user", "updated_at"] : ["resource_type", "resource_id", "updated_at"]
        for name in required {
            switch object[name] {
            case nil, .null?: throw EventRejection(.missingField, "\(name) is required")
            default: continue
            }
        }
        let fields = Fields(object: object)
        switch kind {
        case .profile:
            let user = try fields.userID("user")
            let updatedAt = try fields.time("updated_at", now: now)
            let deleted = try fields.optionalBool("deleted") ?? false
            let (username, userPicture, userBio) = try actorFields(fields)
            return .profile(ProfileUpdate(user: user, profile: ActorProfile(
                username: username, userPicture: userPicture, userBio: userBio, updatedAt: updatedAt, deleted: deleted)))
        case .resourceUpdated, .resourceDeleted:
            let type = try fields.string("resource_type")
            guard ResourceReference.types.contains(type) else {
                throw fields.invalid("resource_type", "must be one of \(ResourceReference.types.sorted().joined(separator: ", "))")
            }
            let id = try resourceID(fields)
            let updatedAt = try fields.time("updated_at", now: now)
            let title = try fields.optionalString("title", maxLength: 256)
            let excerpt = try fields.optionalString("excerpt", maxLength: nil).map { String($0.prefix(Self.excerptLength)) }
            return .resource(ResourceUpdate(
                resource: ResourceReference(type: type, id: id),
                preview: ResourcePreview(title: title, excerpt: excerpt, updatedAt: updatedAt, deleted: kind == .resourceDeleted)))
        }
    }

    /// `resource_id`: 1–256 printable characters.
    private func resourceID(_ fields: Fields) throws(EventRejection) -> String {
        let resourceID = try fields.string("resource_id")
        guard resourceID.unicodeScalars.count <= 256 else { throw fields.invalid("resource_id", "is longer than 256 characters") }
        guard resourceID.unicodeScalars.allSatisfy(Self.isPrintable) else {
            throw fields.invalid("resource_id", "contains control or format characters")
        }
        return resourceID
    }

    /// Whether `id` may be a user id: 1–128 characters of `[A-Za-z0-9_-]`.
    /// User ids become NATS subject tokens, so this is a security boundary.
    public static func isValidUserID(_ id: String) -> Bool {
        let bytes = id.utf8
        guard (1...128).contains(bytes.count) else { return false }
        return bytes.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
    }

    /// Printable: not a control (Cc), format (Cf, e.g. zero-width and
    /// bidirectional controls), line or paragraph separator character.
    static func isPrintable(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate: return false
        default: return true
        }
    }

    /// A picture path for the CDN: one leading `/`, no spaces or control
    /// characters, and a valid URL path.
    static func isPicturePath(_ text: String) -> Bool {
        guard PictureURLs.isPath(text), text.unicodeScalars.allSatisfy({ isPrintable($0) && !$0.properties.isWhitespace }) else { return false }
        return URLComponents(string: "https://cdn.invalid" + text)?.host == "cdn.invalid"
    }

    static func isWebURL(_ text: String) -> Bool {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty
        else { return false }
        return true
    }
}

/// Typed access to an event's fields with `invalid_field` errors.
private struct Fields {
    let object: [String: JSONValue]

    func invalid(_ name: String, _ problem: String) -> EventRejection {
        EventRejection(.invalidField, "\(name) \(problem)")
    }

    func string(_ name: String) throws(EventRejection) -> String {
        guard case .string(let value)? = object[name] else {
            throw invalid(name, "must be a string, got \(object[name]?.typeName ?? "nothing")")
        }
        guard !value.isEmpty else { throw invalid(name, "must not be empty") }
        return value
    }

    func integer(_ name: String) throws(EventRejection) -> Int64 {
        switch object[name] {
        case .integer(let value)?: return value
        case .nonIntegerNumber?: throw invalid(name, "must be an integer that fits 64 bits")
        default: throw invalid(name, "must be an integer, got \(object[name]?.typeName ?? "nothing")")
        }
    }

    /// Unix seconds between 2000-01-01 and a day from `now`.
    func time(_ name: String, now: Int64) throws(EventRejection) -> Int64 {
        let value = try integer(name)
        guard value >= EventValidator.earliestCreatedAt, value <= now + EventValidator.maxClockSkew else {
            throw invalid(name, "must be Unix seconds between \(EventValidator.earliestCreatedAt) and now + \(EventValidator.maxClockSkew)")
        }
        return value
    }

    /// `nil` when absent or null.
    func optionalBool(_ name: String) throws(EventRejection) -> Bool? {
        switch object[name] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        default: throw invalid(name, "must be true or false, got \(object[name]?.typeName ?? "nothing")")
        }
    }

    func userID(_ name: String) throws(EventRejection) -> String {
        let value = try string(name)
        guard EventValidator.isValidUserID(value) else {
            throw invalid(name, "must be 1–128 characters of A–Z, a–z, 0–9, '_' or '-'")
        }
        return value
    }

    /// `nil` when absent or null.
    func optionalString(_ name: String, maxLength: Int?) throws(EventRejection) -> String? {
        switch object[name] {
        case nil, .null?: return nil
        default:
            let value = try string(name)
            if let maxLength, value.unicodeScalars.count > maxLength {
                throw invalid(name, "is longer than \(maxLength) characters")
            }
            return value
        }
    }
}
