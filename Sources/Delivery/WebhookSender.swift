import AsyncHTTPClient
import Crypto
import Foundation
import JSON
import NIOCore
import NIOHTTP1
public import Notifications

/// Delivers notifications to the user's webhook: an HTTP POST of the
/// record, signed with the webhook's secret.
///
/// Headers:
/// - `Notify-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`:
///   a receiver recomputes it and rejects a `t` more than five minutes
///   old, so a captured request cannot be replayed later;
/// - `Notify-Webhook-Id`: the job id, the same on every try (deduplicate on it).
///
/// 2xx is sent; 408, 429, 5xx, timeouts and connection errors are retried
/// (honouring `Retry-After`); any other status is permanent.
public struct WebhookSender: ChannelSender {
    public let channel = DeliveryChannel.webhook
    /// How long one POST may take, connection included.
    public let timeout: Duration
    private let client: HTTPClient
    private let clock: @Sendable () -> Int64

    /// - Parameter clock: Unix seconds for the signature's `t`.
    public init(timeout: Duration = .seconds(10), clock: (@Sendable () -> Int64)? = nil) {
        self.timeout = timeout
        self.client = .shared
        self.clock = clock ?? { Int64(Date().timeIntervalSince1970) }
    }

    /// `t=<timestamp>,v1=<hex>` for `body` sent at `timestamp`.
    public static func signature(secret: String, timestamp: Int64, body: [UInt8]) -> String {
        var message = Array(String(timestamp).utf8)
        message.append(UInt8(ascii: "."))
        message += body
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(secret.utf8)))
        return "t=\(timestamp),v1=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    /// `{"type":"notification.created","webhook_id":…,"notification":{…}}`
    static func body(_ request: DeliveryRequest) -> [UInt8] {
        var json = JSONWriter()
        json.raw("{\"type\":\"notification.created\",\"webhook_id\":")
        json.string(request.jobID)
        json.raw(",\"notification\":")
        json.bytes += request.record.json
        json.raw("}")
        return json.bytes
    }

    public func send(_ request: DeliveryRequest) async -> DeliveryOutcome {
        guard let webhook = request.addresses.webhook else { return .permanent(reason: "no_address: the user has no webhook") }
        let body = Self.body(request)
        var http = HTTPClientRequest(url: webhook.url)
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/json")
        http.headers.add(name: "User-Agent", value: "notify-webhooks/1")
        http.headers.add(name: "Notify-Webhook-Id", value: request.jobID)
        http.headers.add(name: "Notify-Signature", value: Self.signature(secret: webhook.secret, timestamp: clock(), body: body))
        http.body = .bytes(ByteBuffer(bytes: body))
        return await HTTPDelivery.send(http, client: client, timeout: timeout, peer: "the webhook")
    }
}
