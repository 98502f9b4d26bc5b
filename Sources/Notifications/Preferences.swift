import Foundation
package import JSON
import KeyValueStore

/// What a user chose to hear about: event kinds and resources they muted
/// (the worker counts such events and stores nothing), and quiet hours
/// during which notifications are stored but not pushed live.
public struct Preferences: Sendable, Hashable {
    /// Kinds of creating events muted, by subject kind (`post.like`).
    public var mutedKinds: Set<String>
    /// Resources muted: no notification about them, whatever the kind.
    public var mutedResources: Set<MutedResource>
    public var quietHours: QuietHours?
    /// External channels the user opted out of (email, Web Push, webhook):
    /// notifications stay in the app only.
    public var mutedChannels: Set<DeliveryChannel>

    public init(
        mutedKinds: Set<String> = [], mutedResources: Set<MutedResource> = [], quietHours: QuietHours? = nil,
        mutedChannels: Set<DeliveryChannel> = []
    ) {
        self.mutedKinds = mutedKinds
        self.mutedResources = mutedResources
        self.quietHours = quietHours
        self.mutedChannels = mutedChannels
    }

    /// The most muted resources a user keeps.
    public static let maxMutedResources = 1_000

    /// Whether `event` (a creating event) is muted.
    public func mutes(_ event: NotificationEvent) -> Bool {
        mutedKinds.contains(event.kind.name)
            || (!mutedResources.isEmpty && mutedResources.contains(MutedResource(type: event.resourceType, id: event.resourceID)))
    }

    /// Resource types of events (`POST`, `COMMENT`, `USER`).
    static let resourceTypes = Set(EventKind.all.map(\.resourceType))

    /// Kinds that can be muted: every kind that creates a notification.
    public static let mutableKinds = Set(EventKind.all.filter { $0.effect == .create }.map(\.name))

    // MARK: Stored form

    var attributes: [String: AttributeValue] {
        var attributes: [String: AttributeValue] = [
            "muted_kinds": .list(mutedKinds.sorted().map { .string($0) }),
            "muted_resources": .list(mutedResources.sorted().map { .list([.string($0.type), .string($0.id)]) }),
        ]
        if !mutedChannels.isEmpty { attributes["muted_channels"] = .list(mutedChannels.sorted().map { .string($0.rawValue) }) }
        if let quietHours {
            attributes["quiet_start"] = .integer(Int64(quietHours.start))
            attributes["quiet_end"] = .integer(Int64(quietHours.end))
            attributes["time_zone"] = .string(quietHours.timeZone)
        }
        return attributes
    }

    init(attributes: [String: AttributeValue]) {
        var kinds = Set<String>()
        if case .list(let values)? = attributes["muted_kinds"] {
            for case .string(let kind) in values { kinds.insert(kind) }
        }
        var resources = Set<MutedResource>()
        if case .list(let values)? = attributes["muted_resources"] {
            for case .list(let pair) in values {
                if pair.count == 2, let type = pair[0].stringValue, let id = pair[1].stringValue { resources.insert(MutedResource(type: type, id: id)) }
            }
        }
        var quietHours: QuietHours?
        if let start = attributes["quiet_start"]?.integerValue, let end = attributes["quiet_end"]?.integerValue,
           let zone = attributes["time_zone"]?.stringValue {
            quietHours = QuietHours(start: Int(start), end: Int(end), timeZone: zone)
        }
        var channels = Set<DeliveryChannel>()
        if case .list(let values)? = attributes["muted_channels"] {
            for case .string(let name) in values { if let channel = DeliveryChannel(rawValue: name) { channels.insert(channel) } }
        }
        self.init(mutedKinds: kinds, mutedResources: resources, quietHours: quietHours, mutedChannels: channels)
    }

    // MARK: JSON

    /// `{"muted_kinds":[…],"muted_resources":[{"resource_type","resource_id"}…],"quiet_hours":{"start":"22:00","end":"07:00","time_zone":"Europe/Paris"} or null}`
    func write(to json: inout JSONWriter) {
        json.raw("{\"muted_kinds\":[")
        for (index, kind) in mutedKinds.sorted().enumerated() {
            if index > 0 { json.raw(",") }
            json.string(kind)
        }
        json.raw("],\"muted_resources\":[")
        for (index, resource) in mutedResources.sorted().enumerated() {
            if index > 0 { json.raw(",") }
            json.raw("{\"resource_type\":")
            json.string(resource.type)
            json.raw(",\"resource_id\":")
            json.string(resource.id)
            json.raw("}")
        }
        json.raw("],\"muted_channels\":[")
        for (index, channel) in mutedChannels.sorted().enumerated() {
            if index > 0 { json.raw(",") }
            json.string(channel.rawValue)
        }
        json.raw("],\"quiet_hours\":")
        if let quietHours {
            json.raw("{\"start\":")
            json.string(QuietHours.clock(quietHours.start))
            json.raw(",\"end\":")
            json.string(QuietHours.clock(quietHours.end))
            json.raw(",\"time_zone\":")
            json.string(quietHours.timeZone)
            json.raw("}")
        } else {
            json.raw("null")
        }
        json.raw("}")
    }

    /// The preferences as JSON bytes.
    public var json: [UInt8] {
        var writer = JSONWriter()
        write(to: &writer)
        return writer.bytes
    }

    /// Preferences from a request body; the error says what to fix.
    public static func parse(_ body: [UInt8]) -> Result<Preferences, PreferencesError> {
        guard case .object(let object)? = try? JSONParser.parse(body) else {
            return .failure(PreferencesError("the body must be a JSON object"))
        }
        return parse(object: object)
    }

    /// Preferences from a parsed JSON object (a body, or a
    /// `preferences.updated` frame's `preferences`).
    package static func parse(object: [String: JSONValue]) -> Result<Preferences, PreferencesError> {
        let known: Set<String> = ["muted_kinds", "muted_resources", "quiet_hours", "muted_channels"]
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            return .failure(PreferencesError("unknown field '\(unknown)' (fields: muted_kinds, muted_resources, muted_channels, quiet_hours)"))
        }
        var preferences = Preferences()
        switch object["muted_kinds"] {
        case nil, .null?: break
        case .array(let values)?:
            for value in values {
                guard case .string(let kind) = value, mutableKinds.contains(kind) else {
                    return .failure(PreferencesError("muted_kinds holds event kinds: \(mutableKinds.sorted().joined(separator: ", "))"))
                }
                preferences.mutedKinds.insert(kind)
            }
        default: return .failure(PreferencesError("muted_kinds must be an array"))
        }
        switch object["muted_resources"] {
        case nil, .null?: break
        case .array(let values)?:
            guard values.count <= maxMutedResources else {
                return .failure(PreferencesError("muted_resources holds at most \(maxMutedResources) resources"))
            }
            for value in values {
                guard case .object(let fields) = value, case .string(let type)? = fields["resource_type"], case .string(let id)? = fields["resource_id"],
                      resourceTypes.contains(type), !id.isEmpty, id.unicodeScalars.count <= 256,
                      id.unicodeScalars.allSatisfy(EventValidator.isPrintable) else {
                    return .failure(PreferencesError(#"muted_resources holds objects {"resource_type":"POST","resource_id":"…"} (a known type, an id of 1–256 printable characters)"#))
                }
                preferences.mutedResources.insert(MutedResource(type: type, id: id))
            }
        default: return .failure(PreferencesError("muted_resources must be an array"))
        }
        switch object["muted_channels"] {
        case nil, .null?: break
        case .array(let values)?:
            for value in values {
                guard case .string(let name) = value, let channel = DeliveryChannel(rawValue: name) else {
                    return .failure(PreferencesError("muted_channels holds channels: \(DeliveryChannel.allCases.map(\.rawValue).joined(separator: ", "))"))
                }
                preferences.mutedChannels.insert(channel)
            }
        default: return .failure(PreferencesError("muted_channels must be an array"))
        }
        switch object["quiet_hours"] {
        case nil, .null?: break
        case .object(let fields)?:
            guard case .string(let startText)? = fields["start"], let start = QuietHours.minutes(startText),
                  case .string(let endText)? = fields["end"], let end = QuietHours.minutes(endText) else {
                return .failure(PreferencesError(#"quiet_hours.start and .end are local times "HH:MM" (00:00–23:59)"#))
            }
            guard start != end else { return .failure(PreferencesError("quiet_hours.start and .end must differ")) }
            guard case .string(let zone)? = fields["time_zone"], zone.utf8.count <= 64, TimeZone(identifier: zone) != nil else {
                return .failure(PreferencesError("quiet_hours.time_zone must be an IANA time zone, such as Europe/Paris or America/New_York"))
            }
            preferences.quietHours = QuietHours(start: start, end: end, timeZone: zone)
        default: return .failure(PreferencesError("quiet_hours must be an object or null"))
        }
        return .success(preferences)
    }
}

/// A muted resource: its type and id, as in events.
public struct MutedResource: Sendable, Hashable, Comparable {
    public let type: String
    public let id: String

    public init(type: String, id: String) {
        self.type = type
        self.id = id
    }

    public static func < (lhs: MutedResource, rhs: MutedResource) -> Bool {
        (lhs.type, lhs.id) < (rhs.type, rhs.id)
    }
}

/// A daily span of local time, in a time zone, during which notifications
/// are not pushed live. It may run over midnight (22:00–07:00).
public struct QuietHours: Sendable, Hashable {
    /// Minutes after local midnight, 0–1439.
    public let start: Int
    public let end: Int
    /// An IANA identifier (`Europe/Paris`).
    public let timeZone: String
    /// The zone, looked up once (`nil`: unknown on this machine).
    private let zone: TimeZone?

    public init(start: Int, end: Int, timeZone: String) {
        self.start = start
        self.end = end
        self.timeZone = timeZone
        zone = TimeZone(identifier: timeZone)
    }

    /// `nil` while they are not on; else the Unix second they end at.
    public func end(ifQuietAt unixSeconds: Int64) -> Int64? {
        guard let zone else { return nil }
        let offset = Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(unixSeconds))))
        let local = unixSeconds + offset
        let secondOfDay = ((local % 86_400) + 86_400) % 86_400
        let minute = Int(secondOfDay / 60)
        let quiet = start < end ? (minute >= start && minute < end) : (minute >= start || minute < end)
        guard quiet else { return nil }
        let untilEnd = Int64((end * 60 - Int(secondOfDay) + 86_400) % 86_400)
        return unixSeconds + (untilEnd == 0 ? 86_400 : untilEnd)
    }

    /// `"HH:MM"` → minutes after midnight.
    static func minutes(_ text: String) -> Int? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 2, parts[1].count == 2,
              let hours = Int(parts[0]), let minutes = Int(parts[1]), (0..<24).contains(hours), (0..<60).contains(minutes)
        else { return nil }
        return hours * 60 + minutes
    }

    /// Minutes after midnight → `"HH:MM"`.
    static func clock(_ minutes: Int) -> String {
        let (hours, rest) = minutes.quotientAndRemainder(dividingBy: 60)
        return (hours < 10 ? "0" : "") + String(hours) + ":" + (rest < 10 ? "0" : "") + String(rest)
    }
}

/// Preferences a client sent that cannot be stored; the message says why.
public struct PreferencesError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }

    init(_ message: String) {
        self.message = message
    }
}
