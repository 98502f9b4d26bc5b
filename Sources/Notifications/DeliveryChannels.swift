import Foundation
package import JSON
import KeyValueStore

/// A way to reach a user outside the app: each notification can become
/// one delivery job per channel the user has an address for and did not
/// mute (CONTRACT-EXTENSIONS, "Delivery beyond the browser").
public enum DeliveryChannel: String, Sendable, Hashable, CaseIterable, Comparable {
    case email, webpush, webhook

    public static func < (lhs: DeliveryChannel, rhs: DeliveryChannel) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Where one channel's delivery of a notification stands, stored on the
/// notification (`deliveries`).
public struct ChannelDelivery: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable {
        /// A job is queued and not tried yet.
        case pending
        /// A try failed for a reason that may pass; another is scheduled.
        case retrying
        /// The channel's server accepted it.
        case sent
        /// Given up: a permanent error, or every try failed (dead-lettered).
        case failed
        /// Not sent: the user turned the channel off after it was queued.
        case skipped

        /// Whether nothing more will be tried.
        public var isFinal: Bool { self == .sent || self == .failed || self == .skipped }
    }

    public let channel: DeliveryChannel
    public let status: Status
    /// Tries so far (0 while pending).
    public let attempts: Int64
    /// Why the last try failed.
    public let error: String?
    /// Unix milliseconds of this status.
    public let at: Int64

    public init(channel: DeliveryChannel, status: Status, attempts: Int64, error: String? = nil, at: Int64) {
        self.channel = channel
        self.status = status
        self.attempts = attempts
        self.error = error
        self.at = at
    }

    /// The attribute a channel's status is stored under: one per channel,
    /// so concurrent jobs of one notification never overwrite each other.
    static func attributeName(_ channel: DeliveryChannel) -> String { "delivery_" + channel.rawValue }

    var attribute: AttributeValue {
        var fields: [String: AttributeValue] = [
            "status": .string(status.rawValue), "attempts": .integer(attempts), "at": .integer(at),
        ]
        if let error { fields["error"] = .string(error) }
        return .map(fields)
    }

    init?(channel: DeliveryChannel, attribute: AttributeValue?) {
        guard case .map(let fields)? = attribute, let status = fields["status"]?.stringValue.flatMap(Status.init(rawValue:)),
              let attempts = fields["attempts"]?.integerValue, let at = fields["at"]?.integerValue else { return nil }
        self.init(channel: channel, status: status, attempts: attempts, error: fields["error"]?.stringValue, at: at)
    }

    /// `{"channel":…,"status":…,"attempts":…,"error"?:…}`
    func write(to json: inout JSONWriter) {
        json.raw("{\"channel\":"); json.string(channel.rawValue)
        json.raw(",\"status\":"); json.string(status.rawValue)
        json.raw(",\"attempts\":"); json.integer(attempts)
        if let error { json.raw(",\"error\":"); json.string(error) }
        json.raw("}")
    }
}

/// A browser's Web Push subscription (`PushSubscription.toJSON()`): where
/// to POST, and the keys its payloads are encrypted to (RFC 8291).
public struct PushSubscription: Sendable, Hashable {
    public let endpoint: String
    /// The browser's P-256 public key, base64url (65 bytes uncompressed).
    public let p256dh: String
    /// The 16-byte authentication secret, base64url.
    public let auth: String

    public init(endpoint: String, p256dh: String, auth: String) {
        self.endpoint = endpoint
        self.p256dh = p256dh
        self.auth = auth
    }
}

/// A user's webhook: where to POST, and the secret its signatures use.
public struct Webhook: Sendable, Hashable {
    public let url: String
    /// Made by the gateway when the URL is first set, shown to its owner.
    public let secret: String

    public init(url: String, secret: String) {
        self.url = url
        self.secret = secret
    }
}

/// Where a user can be reached outside the app (`PUT /v1/channels`).
public struct DeliveryAddresses: Sendable, Hashable {
    public var email: String?
    public var pushSubscriptions: [PushSubscription]
    public var webhook: Webhook?

    public init(email: String? = nil, pushSubscriptions: [PushSubscription] = [], webhook: Webhook? = nil) {
        self.email = email
        self.pushSubscriptions = pushSubscriptions
        self.webhook = webhook
    }

    /// The most Web Push subscriptions (browsers, devices) a user keeps.
    public static let maxPushSubscriptions = 10

    /// Whether the user has an address for `channel`.
    public func has(_ channel: DeliveryChannel) -> Bool {
        switch channel {
        case .email: email != nil
        case .webpush: !pushSubscriptions.isEmpty
        case .webhook: webhook != nil
        }
    }

    // MARK: Stored form

    var attributes: [String: AttributeValue] {
        var attributes: [String: AttributeValue] = [:]
        if let email { attributes["email"] = .string(email) }
        if !pushSubscriptions.isEmpty {
            attributes["webpush"] = .list(pushSubscriptions.map {
                .map(["endpoint": .string($0.endpoint), "p256dh": .string($0.p256dh), "auth": .string($0.auth)])
            })
        }
        if let webhook { attributes["webhook_url"] = .string(webhook.url); attributes["webhook_secret"] = .string(webhook.secret) }
        return attributes
    }

    init(attributes: [String: AttributeValue]) {
        email = attributes["email"]?.stringValue
        var subscriptions: [PushSubscription] = []
        if case .list(let list)? = attributes["webpush"] {
            for case .map(let fields) in list {
                guard let endpoint = fields["endpoint"]?.stringValue, let p256dh = fields["p256dh"]?.stringValue,
                      let auth = fields["auth"]?.stringValue else { continue }
                subscriptions.append(PushSubscription(endpoint: endpoint, p256dh: p256dh, auth: auth))
            }
        }
        pushSubscriptions = subscriptions
        if let url = attributes["webhook_url"]?.stringValue, let secret = attributes["webhook_secret"]?.stringValue {
            webhook = Webhook(url: url, secret: secret)
        }
    }

    // MARK: JSON

    /// `{"email":…|null,"webpush":[{"endpoint","keys":{"p256dh","auth"}}…],"webhook":{"url","secret"}|null}`
    public var json: [UInt8] {
        var json = JSONWriter()
        json.raw("{\"email\":")
        if let email { json.string(email) } else { json.raw("null") }
        json.raw(",\"webpush\":[")
        for (index, subscription) in pushSubscriptions.enumerated() {
            if index > 0 { json.raw(",") }
            json.raw("{\"endpoint\":"); json.string(subscription.endpoint)
            json.raw(",\"keys\":{\"p256dh\":"); json.string(subscription.p256dh)
            json.raw(",\"auth\":"); json.string(subscription.auth)
            json.raw("}}")
        }
        json.raw("],\"webhook\":")
        if let webhook {
            json.raw("{\"url\":"); json.string(webhook.url)
            json.raw(",\"secret\":"); json.string(webhook.secret)
            json.raw("}")
        } else {
            json.raw("null")
        }
        json.raw("}")
        return json.bytes
    }

    /// Addresses from a `PUT /v1/channels` body, which replaces them all.
    /// A webhook keeps its secret while its URL stays the same; a new URL
    /// gets `newSecret()`.
    public static func parse(
        _ body: [UInt8], current: DeliveryAddresses, newSecret: () -> String
    ) -> Result<DeliveryAddresses, PreferencesError> {
        guard case .object(let object)? = try? JSONParser.parse(body) else {
            return .failure(PreferencesError("the body must be a JSON object"))
        }
        let known: Set<String> = ["email", "webpush", "webhook"]
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            return .failure(PreferencesError("unknown field '\(unknown)' (fields: email, webpush, webhook)"))
        }
        var addresses = DeliveryAddresses()
        switch object["email"] {
        case nil, .null?: break
        case .string(let email)?:
            guard isEmailAddress(email) else {
                return .failure(PreferencesError("email must be an address like ana@example.com (at most 254 characters)"))
            }
            addresses.email = email
        default: return .failure(PreferencesError("email must be a string or null"))
        }
        switch object["webpush"] {
        case nil, .null?: break
        case .array(let values)?:
            guard values.count <= maxPushSubscriptions else {
                return .failure(PreferencesError("webpush holds at most \(maxPushSubscriptions) subscriptions"))
            }
            for value in values {
                switch pushSubscription(value) {
                case .success(let subscription):
                    if !addresses.pushSubscriptions.contains(where: { $0.endpoint == subscription.endpoint }) {
                        addresses.pushSubscriptions.append(subscription)
                    }
                case .failure(let error): return .failure(error)
                }
            }
        default: return .failure(PreferencesError("webpush must be an array of push subscriptions"))
        }
        switch object["webhook"] {
        case nil, .null?: break
        case .object(let fields)?:
            guard case .string(let url)? = fields["url"], isWebURL(url) else {
                return .failure(PreferencesError(#"webhook must be {"url":"https://…"} (an http or https URL of at most 2048 characters)"#))
            }
            let secret = current.webhook.flatMap { $0.url == url ? $0.secret : nil } ?? newSecret()
            addresses.webhook = Webhook(url: url, secret: secret)
        default: return .failure(PreferencesError(#"webhook must be an object {"url":"https://…"} or null"#))
        }
        return .success(addresses)
    }

    /// A subscription as `PushSubscription.toJSON()` gives it:
    /// `{"endpoint":"https://…","keys":{"p256dh":"…","auth":"…"}}`.
    package static func pushSubscription(_ value: JSONValue) -> Result<PushSubscription, PreferencesError> {
        let shape = #"a push subscription is {"endpoint":"https://…","keys":{"p256dh":"<base64url>","auth":"<base64url>"}}"#
        guard case .object(let fields) = value, case .string(let endpoint)? = fields["endpoint"], isWebURL(endpoint),
              case .object(let keys)? = fields["keys"], case .string(let p256dh)? = keys["p256dh"], case .string(let auth)? = keys["auth"]
        else { return .failure(PreferencesError(shape)) }
        guard let key = Base64URL.decode(p256dh), key.count == 65, key[0] == 4 else {
            return .failure(PreferencesError("keys.p256dh must be a base64url uncompressed P-256 public key (65 bytes)"))
        }
        guard let secret = Base64URL.decode(auth), secret.count == 16 else {
            return .failure(PreferencesError("keys.auth must be a base64url 16-byte secret"))
        }
        return .success(PushSubscription(endpoint: endpoint, p256dh: p256dh, auth: auth))
    }

    /// One `@`, something on each side, a dot in the domain, no spaces or
    /// control characters (a header injection could not hide in it).
    public static func isEmailAddress(_ text: String) -> Bool {
        guard text.utf8.count <= 254, !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F || "<>,;\"()[]\\".unicodeScalars.contains($0) })
        else { return false }
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].utf8.count <= 64 else { return false }
        let labels = parts[1].split(separator: ".", omittingEmptySubsequences: false)
        return labels.count >= 2 && labels.allSatisfy { !$0.isEmpty }
    }

    /// An absolute `http` or `https` URL with a host.
    static func isWebURL(_ text: String) -> Bool {
        guard text.utf8.count <= 2048, let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
              scheme == "https" || scheme == "http", let host = url.host, !host.isEmpty else { return false }
        return true
    }
}

/// Unpadded base64url (RFC 4648 §5, as JWTs (RFC 7515 §2) and Web Push
/// keys are written): the one encoder and strict decoder of the project.
public enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var output: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 6 {
                bits -= 6
                output.append(alphabet[Int((buffer >> UInt32(bits)) & 63)])
            }
        }
        if bits > 0 { output.append(alphabet[Int((buffer << UInt32(6 - bits)) & 63)]) }
        return String(decoding: output, as: UTF8.self)
    }

    public static func decode(_ text: String) -> [UInt8]? {
        decode(ArraySlice(text.utf8))
    }

    /// The bytes of `input`; `nil` for padding, other characters or a
    /// non-canonical ending.
    public static func decode(_ input: ArraySlice<UInt8>) -> [UInt8]? {
        guard input.count % 4 != 1 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(input.count * 3 / 4)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in input {
            let value: UInt32
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(byte - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(byte - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(byte - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            default: return nil
            }
            buffer = buffer << 6 | value
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        // Leftover bits must be zero (canonical encoding).
        if bits > 0, buffer & ((1 << UInt32(bits)) - 1) != 0 { return nil }
        return output
    }
}
