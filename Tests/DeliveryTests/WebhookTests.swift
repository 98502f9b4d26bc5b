import Crypto
import Delivery
import Foundation
import JSON
import NATS
import Notifications
import Testing
import TestSupport

/// Webhook delivery end to end: a real nats-server, worker, dispatcher
/// and SQLite store, and a real HTTP server on loopback that checks each
/// request's signature the way a receiver would.
@Suite("Webhooks")
struct WebhookTests {
    static let secret = "whsec_test-secret-for-signatures"

    /// Recomputes `Notify-Signature` from the request; `nil` when it is
    /// missing, stale (over five minutes) or wrong.
    static func verifiedTimestamp(_ request: ReceivedRequest, secret: String = secret) -> Int64? {
        guard let header = request.header("Notify-Signature") else { return nil }
        var fields: [String: String] = [:]
        for part in header.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1)
            if pair.count == 2 { fields[String(pair[0])] = String(pair[1]) }
        }
        guard let t = fields["t"], let timestamp = Int64(t), let v1 = fields["v1"] else { return nil }
        guard abs(Int64(Date().timeIntervalSince1970) - timestamp) <= 300 else { return nil }
        let expected = HMAC<SHA256>.authenticationCode(for: Array((t + ".").utf8) + request.body, using: SymmetricKey(data: Array(secret.utf8)))
        let hex = expected.map { String(format: "%02x", $0) }.joined()
        return hex == v1 ? timestamp : nil
    }

    private func withWebhook(
        owner: String, harness: DeliveryHarness, url: String
    ) async throws {
        try await harness.repository.setDeliveryAddresses(DeliveryAddresses(webhook: Webhook(url: url, secret: Self.secret)), owner: owner)
    }

    @Test("a new notification is POSTed once, signed, with the rendered title; the record says sent")
    func delivered() async throws {
        let receiver = try await HTTPReceiver { _, _ in (200, []) }
        defer { Task { await receiver.stop() } }
        try await DeliveryHarness.run(senders: [WebhookSender(timeout: .seconds(5))]) { harness in
            try await withWebhook(owner: "u1", harness: harness, url: receiver.url)
            try await harness.like(owner: "u1")
            let delivery = try #require(try await harness.finalDelivery("u1", .webhook))
            #expect(delivery.status == .sent)
            #expect(delivery.attempts == 1)
            let requests = receiver.requests
            try #require(requests.count == 1)
            let request = requests[0]
            #expect(request.method == "POST")
            #expect(request.path == "/hook")
            #expect(request.header("Content-Type") == "application/json")
            #expect(Self.verifiedTimestamp(request) != nil, "the signature must verify with the webhook's secret")
            #expect(Self.verifiedTimestamp(request, secret: "another-secret") == nil)
            let record = try #require(try await harness.newest("u1"))
            #expect(request.header("Notify-Webhook-Id") == record.id + ".webhook")
            guard case .object(let body)? = try? JSONParser.parse(request.body), case .object(let notification)? = body["notification"] else {
                Issue.record("the body is not {\"notification\":{…}}")
                return
            }
            #expect(body["type"] == .string("notification.created"))
            #expect(notification["id"] == .string(record.id))
            #expect(notification["title"] == .string("Ana liked your post"))
            #expect(notification["body"] == .string("Sunset over the bay"))
            // Nothing more arrives later.
            try await Task.sleep(for: .milliseconds(500))
            #expect(receiver.requests.count == 1)
        }
    }

    @Test("503 with Retry-After is retried after that delay with the same webhook id; then sent on the second try")
    func retryAfter() async throws {
        let receiver = try await HTTPReceiver { _, index in index == 1 ? (503, [("Retry-After", "1")]) : (200, []) }
        defer { Task { await receiver.stop() } }
        try await DeliveryHarness.run(senders: [WebhookSender(timeout: .seconds(5))]) { harness in
            try await withWebhook(owner: "u2", harness: harness, url: receiver.url)
            try await harness.like(owner: "u2")
            let delivery = try #require(try await harness.finalDelivery("u2", .webhook))
            #expect(delivery.status == .sent)
            #expect(delivery.attempts == 2)
            let requests = receiver.requests
            try #require(requests.count == 2)
            // The server asked for 1 s; the backoff alone would be 50–100 ms.
            #expect(requests[1].at - requests[0].at >= .milliseconds(900))
            #expect(requests[0].header("Notify-Webhook-Id") == requests[1].header("Notify-Webhook-Id"))
            #expect(requests.allSatisfy { Self.verifiedTimestamp($0) != nil })
        }
    }

    @Test("a 4xx answer is permanent: failed after one try, dead-lettered with the reason")
    func permanent() async throws {
        let receiver = try await HTTPReceiver { _, _ in (410, []) }
        defer { Task { await receiver.stop() } }
        try await DeliveryHarness.run(senders: [WebhookSender(timeout: .seconds(5))]) { harness in
            try await withWebhook(owner: "u3", harness: harness, url: receiver.url)
            try await harness.like(owner: "u3")
            let delivery = try #require(try await harness.finalDelivery("u3", .webhook))
            #expect(delivery.status == .failed)
            #expect(delivery.attempts == 1)
            #expect(delivery.error?.hasPrefix("http_410") == true)
            #expect(receiver.requests.count == 1)
            let dead = try await harness.deadLetters(.webhook)
            try #require(dead.count == 1)
            #expect(dead[0].message.headers["Notify-Reason"] == "http_410")
            guard case .object(let letter)? = try? JSONParser.parse(dead[0].message.payload) else {
                Issue.record("the dead letter is not JSON")
                return
            }
            #expect(letter["owner"] == .string("u3"))
            #expect(letter["channel"] == .string("webhook"))
        }
    }

    @Test("5xx on every try: retried with growing delays, then failed and dead-lettered after the last try")
    func exhausted() async throws {
        let receiver = try await HTTPReceiver { _, _ in (500, []) }
        defer { Task { await receiver.stop() } }
        try await DeliveryHarness.run(senders: [WebhookSender(timeout: .seconds(5))]) { harness in
            try await withWebhook(owner: "u4", harness: harness, url: receiver.url)
            try await harness.like(owner: "u4")
            let delivery = try #require(try await harness.finalDelivery("u4", .webhook))
            #expect(delivery.status == .failed)
            #expect(delivery.attempts == 3)
            #expect(receiver.requests.count == 3)
            #expect(try await harness.deadLetters(.webhook).count == 1)
        }
    }

    @Test("an unreachable webhook is a transient failure, retried until the last try")
    func unreachable() async throws {
        let refusing = try RefusingPort()
        let url = "http://127.0.0.1:\(refusing.port)/hook"
        try await DeliveryHarness.run(senders: [WebhookSender(timeout: .seconds(2))]) { harness in
            try await withWebhook(owner: "u5", harness: harness, url: url)
            try await harness.like(owner: "u5")
            let delivery = try #require(try await harness.finalDelivery("u5", .webhook))
            #expect(delivery.status == .failed)
            #expect(delivery.attempts == 3)
            #expect(delivery.error?.hasPrefix("connection") == true)
        }
        withExtendedLifetime(refusing) {}
    }

    @Test("a user who muted the channel, or has no address, gets nothing sent and no delivery recorded")
    func mutedOrNoAddress() async throws {
        let receiver = try await HTTPReceiver { _, _ in (200, []) }
        defer { Task { await receiver.stop() } }
        try await DeliveryHarness.run(senders: [WebhookSender(timeout: .seconds(5))]) { harness in
            try await withWebhook(owner: "muted", harness: harness, url: receiver.url)
            try await harness.repository.setPreferences(Preferences(mutedChannels: [.webhook]), owner: "muted")
            try await harness.like(owner: "muted")
            try await harness.like(owner: "nobody")
            // A third user with a webhook shows the dispatcher got past both.
            try await withWebhook(owner: "control", harness: harness, url: receiver.url)
            try await harness.like(owner: "control")
            #expect(try await harness.finalDelivery("control", .webhook)?.status == .sent)
            #expect(receiver.requests.count == 1)
            #expect(try await harness.newest("muted")?.deliveries == [])
            #expect(try await harness.newest("nobody")?.deliveries == [])
        }
    }
}
