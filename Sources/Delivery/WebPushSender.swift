import AsyncHTTPClient
import Foundation
import JSON
import KeyValueStore
public import Logging
import NIOCore
import NIOHTTP1
public import Notifications
public import Templates

/// Delivers notifications to every browser the user subscribed with
/// (RFC 8030), each message encrypted for that browser (RFC 8291) and
/// signed with the server's VAPID key (RFC 8292).
///
/// The payload is JSON a service worker shows as it is:
/// `{"id","title","body","url","icon","created_at"}` from the `webpush`
/// templates. A push service's 201 (or any 2xx) is sent; 404 and 410 mean
/// the subscription is gone, and it is removed from the user's addresses;
/// 408, 429, 5xx, timeouts and connection errors are retried (honouring
/// `Retry-After`); any other status is permanent.
///
/// With several subscriptions the outcome is the most hopeful that still
/// loses nothing: any retryable failure retries the job (a browser that
/// already has the message gets it again; the service worker's `tag: id`
/// makes it replace the first), else any accepted push is sent.
public struct WebPushSender: ChannelSender {
    public let channel = DeliveryChannel.webpush
    let key: VAPIDKey
    /// `mailto:` or `https:` contact for the push service's operators.
    let subject: String
    let templates: NotificationTemplates
    let repository: NotificationRepository
    /// The push service keeps an undelivered message this long (`TTL`).
    let timeToLive: Duration
    let timeout: Duration
    let logger: Logger
    private let client: HTTPClient

    public init(
        key: VAPIDKey, subject: String, templates: NotificationTemplates, repository: NotificationRepository,
        timeToLive: Duration = .seconds(86_400), timeout: Duration = .seconds(10), logger: Logger
    ) {
        self.key = key
        self.subject = subject
        self.templates = templates
        self.repository = repository
        self.timeToLive = timeToLive
        self.timeout = timeout
        self.logger = logger
        self.client = .shared
    }

    public func send(_ request: DeliveryRequest) async -> DeliveryOutcome {
        let subscriptions = request.addresses.pushSubscriptions
        guard !subscriptions.isEmpty else { return .permanent(reason: "no_address: the user has no push subscription") }
        let payload = Self.payload(request.record, templates: templates)
        var outcomes: [DeliveryOutcome] = []
        for subscription in subscriptions {
            let outcome = await push(payload, to: subscription, record: request.record)
            if case .permanent(let reason) = outcome, reason.hasPrefix("gone") {
                do {
                    try await repository.removePushSubscription(endpoint: subscription.endpoint, owner: request.record.owner)
                    logger.info("push subscription gone; removed", metadata: ["owner": .string(request.record.owner), "endpoint": .string(subscription.endpoint)])
                } catch {
                    logger.warning("removing a gone push subscription failed", metadata: ["owner": .string(request.record.owner), "error": .string(error.description)])
                }
            }
            outcomes.append(outcome)
        }
        if let retry = outcomes.first(where: { if case .transient = $0 { true } else { false } }) { return retry }
        if outcomes.contains(.sent) { return .sent }
        return outcomes[0]
    }

    /// One subscription's push.
    private func push(_ payload: [UInt8], to subscription: PushSubscription, record: NotificationRecord) async -> DeliveryOutcome {
        guard let audience = Self.origin(subscription.endpoint) else {
            return .permanent(reason: "bad_subscription: the endpoint \(subscription.endpoint) is not an http(s) URL")
        }
        let body: [UInt8]
        let authorization: String
        do {
            guard let p256dh = Base64URL.decode(subscription.p256dh), let auth = Base64URL.decode(subscription.auth) else {
                return .permanent(reason: "bad_subscription: p256dh or auth is not base64url")
            }
            body = try WebPushEncryption.encrypt(payload, p256dh: p256dh, auth: auth)
            // RFC 8292 §2: at most 24 hours; 12 leaves room for clock skew.
            authorization = try key.authorization(audience: audience, subject: subject, expiry: Int64(Date().timeIntervalSince1970) + 12 * 3_600)
        } catch {
            return .permanent(reason: "bad_subscription: \(error)")
        }
        var http = HTTPClientRequest(url: subscription.endpoint)
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/octet-stream")
        http.headers.add(name: "Content-Encoding", value: "aes128gcm")
        http.headers.add(name: "TTL", value: String(timeToLive.components.seconds))
        http.headers.add(name: "Urgency", value: record.priority == .high ? "high" : record.priority == .low ? "low" : "normal")
        http.headers.add(name: "Authorization", value: authorization)
        http.body = .bytes(ByteBuffer(bytes: body))
        return await HTTPDelivery.send(http, client: client, timeout: timeout, peer: "the push service", gone: [404, 410])
    }

    /// `{"id","title","body","url","icon","created_at"}`, the body cut to
    /// fit one push message.
    static func payload(_ record: NotificationRecord, templates: NotificationTemplates) -> [UInt8] {
        let rendered = templates.render(record, channel: .webpush)
        let full = rendered?.body ?? record.body ?? ""
        var kept = full.count
        while true {
            var json = JSONWriter()
            json.raw("{\"id\":")
            json.string(record.id)
            json.raw(",\"title\":")
            json.string(rendered?.title ?? record.title ?? "")
            json.raw(",\"body\":")
            json.string(kept == full.count ? full : String(full.prefix(kept)) + "…")
            json.raw(",\"url\":")
            json.string(rendered?.actionURL ?? templates.appURL)
            if let icon = record.userPicture {
                json.raw(",\"icon\":")
                json.string(icon)
            }
            json.raw(",\"created_at\":")
            json.integer(record.createdAt)
            json.raw("}")
            let excess = json.bytes.count - WebPushEncryption.maxPlaintext
            if excess <= 0 || kept == 0 { return json.bytes }
            // A character is at least one byte: dropping `excess` of them
            // (and one for the ellipsis' first cut) converges.
            kept = max(0, kept - max(excess, 1) - (kept == full.count ? 3 : 0))
        }
    }

    /// `https://push.example.net` for an endpoint under it: the VAPID
    /// token's audience.
    static func origin(_ endpoint: String) -> String? {
        guard let url = URLComponents(string: endpoint), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty else { return nil }
        let defaultPort = scheme == "https" ? 443 : 80
        if let port = url.port, port != defaultPort { return "\(scheme)://\(host):\(port)" }
        return "\(scheme)://\(host)"
    }
}
