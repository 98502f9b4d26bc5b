import Crypto
import Delivery
import Foundation
import JSON
import NATS
import Notifications
import ProcessSupport
import Testing
import TestSupport

/// Web Push: the encryption against RFC 8291's own example, and delivery
/// end to end through a real worker and dispatcher to the push service
/// stand-in, which decrypts each message with the subscription's private
/// key and verifies its VAPID signature.
@Suite("Web Push")
struct WebPushTests {
    static let subject = "mailto:ops@example.com"

    @Test("encryption reproduces RFC 8291's example byte for byte")
    func rfcExample() throws {
        // RFC 8291 §5 and Appendix A.
        let senderKey = try P256.KeyAgreement.PrivateKey(rawRepresentation: try #require(Base64URL.decode("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")))
        let body = try WebPushEncryption.encrypt(
            Array("When I grow up, I want to be a watermelon".utf8),
            p256dh: try #require(Base64URL.decode("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")),
            auth: try #require(Base64URL.decode("BTBZMqHH6r4Tts7J_aSIgg")),
            senderKey: senderKey, salt: Base64URL.decode("DGv6ra1nlYgDCS1FRnbzlw"))
        #expect(Base64URL.encode(body) == "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
    }

    @Test("bad subscription keys and oversized payloads are refused with the reason")
    func refusals() throws {
        let p256dh = Array(P256.KeyAgreement.PrivateKey().publicKey.x963Representation)
        #expect(throws: WebPushError.self) { try WebPushEncryption.encrypt([1], p256dh: Array(p256dh.prefix(33)), auth: Array(repeating: 1, count: 16)) }
        #expect(throws: WebPushError.self) { try WebPushEncryption.encrypt([1], p256dh: p256dh, auth: [1, 2, 3]) }
        #expect(throws: WebPushError.self) {
            try WebPushEncryption.encrypt(Array(repeating: 65, count: WebPushEncryption.maxPlaintext + 1), p256dh: p256dh, auth: Array(repeating: 1, count: 16))
        }
        let largest = try WebPushEncryption.encrypt(Array(repeating: 65, count: WebPushEncryption.maxPlaintext), p256dh: p256dh, auth: Array(repeating: 1, count: 16))
        #expect(largest.count == WebPushEncryption.recordSize)
        #expect(throws: WebPushError.self) { try VAPIDKey(base64URL: "not-a-key") }
    }

    @Test("a VAPID key round-trips through VAPID_PRIVATE_KEY's form and signs a verifiable ES256 token")
    func vapidToken() throws {
        let key = VAPIDKey.generate()
        let reloaded = try VAPIDKey(base64URL: key.privateKeyBase64URL)
        #expect(reloaded.publicKey == key.publicKey)
        let header = try key.authorization(audience: "https://push.example.net", subject: Self.subject, expiry: 1_900_000_000)
        let parts = header.split(separator: " ")
        try #require(parts.count == 3 && parts[0] == "vapid")
        #expect(parts[2] == "k=" + key.publicKey)
        let token = parts[1].dropFirst(2).dropLast() // "t=…,"
        let pieces = token.split(separator: ".")
        try #require(pieces.count == 3)
        let claims = try JSONParser.parse(try #require(Base64URL.decode(String(pieces[1]))))
        #expect(claims == .object(["aud": "https://push.example.net", "exp": .integer(1_900_000_000), "sub": .string(Self.subject)]))
        let publicKey = try P256.Signing.PublicKey(x963Representation: try #require(Base64URL.decode(key.publicKey)))
        let signature = try P256.Signing.ECDSASignature(rawRepresentation: try #require(Base64URL.decode(String(pieces[2]))))
        #expect(publicKey.isValidSignature(signature, for: Array((pieces[0] + "." + pieces[1]).utf8)))
    }

    private func sender(_ key: VAPIDKey, _ repository: NotificationRepository) throws -> WebPushSender {
        WebPushSender(
            key: key, subject: Self.subject, templates: try DeliveryHarness.templates(), repository: repository,
            timeout: .seconds(5), logger: DeliveryHarness.quietLogger)
    }

    /// The payload of a recorded push, parsed.
    private func payload(_ message: [String: Any]) -> [String: Any]? {
        guard let text = message["payload"] as? String else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
    }

    @Test("a new notification reaches the subscribed browser, decryptable and VAPID-signed; the record says sent")
    func delivered() async throws {
        let key = VAPIDKey.generate()
        try await PushService.run { service in
            let subscription = try await service.subscribe()
            try await DeliveryHarness.run(makeSenders: { [try sender(key, $0)] }) { harness in
                try await harness.repository.setDeliveryAddresses(DeliveryAddresses(pushSubscriptions: [subscription]), owner: "u1")
                try await harness.like(owner: "u1")
                let delivery = try #require(try await harness.finalDelivery("u1", .webpush))
                #expect(delivery.status == .sent)
                #expect(delivery.attempts == 1)
                let record = try #require(try await harness.newest("u1"))
                let messages = try await service.messages()
                try #require(messages.count == 1, "\(messages)")
                let message = messages[0]
                #expect(message["accepted"] as? Bool == true, "rejected: \(message["error"] ?? "")")
                let vapid = try #require(message["vapid"] as? [String: Any])
                #expect(vapid["k"] as? String == key.publicKey)
                #expect(vapid["sub"] as? String == Self.subject)
                #expect(vapid["aud"] as? String == "http://\(service.server.address)")
                let headers = try #require(message["headers"] as? [String: Any])
                #expect(headers["ttl"] as? String == "86400")
                #expect(headers["urgency"] as? String == "normal")
                #expect(headers["content_encoding"] as? String == "aes128gcm")
                let shown = try #require(payload(message))
                #expect(shown["id"] as? String == record.id)
                #expect(shown["title"] as? String == "Ana liked your post")
                #expect(shown["body"] as? String == "Sunset over the bay")
                #expect((shown["url"] as? String)?.hasPrefix("https://app.example.com/") == true)
                try await Task.sleep(for: .milliseconds(300))
                #expect(try await service.messages().count == 1, "sent once")
            }
        }
    }

    @Test("503 with Retry-After is retried after the delay, then sent on the second try")
    func retried() async throws {
        let key = VAPIDKey.generate()
        try await PushService.run { service in
            let subscription = try await service.subscribe(status: 503, times: 1, retryAfter: 1)
            try await DeliveryHarness.run(makeSenders: { [try sender(key, $0)] }) { harness in
                try await harness.repository.setDeliveryAddresses(DeliveryAddresses(pushSubscriptions: [subscription]), owner: "u2")
                try await harness.like(owner: "u2")
                let delivery = try #require(try await harness.finalDelivery("u2", .webpush))
                #expect(delivery.status == .sent)
                #expect(delivery.attempts == 2)
                let messages = try await service.messages()
                #expect(messages.map { $0["answered"] as? Int } == [503, 201])
                #expect(messages.allSatisfy { $0["accepted"] as? Bool == true })
            }
        }
    }

    @Test("a gone subscription (410) is removed; with another that works the notification is sent, alone it fails and is dead-lettered")
    func gone() async throws {
        let key = VAPIDKey.generate()
        try await PushService.run { service in
            let working = try await service.subscribe()
            let expired = try await service.subscribe(status: 410)
            let lonely = try await service.subscribe(status: 410)
            try await DeliveryHarness.run(makeSenders: { [try sender(key, $0)] }) { harness in
                try await harness.repository.setDeliveryAddresses(DeliveryAddresses(pushSubscriptions: [expired, working]), owner: "u3")
                try await harness.like(owner: "u3")
                let sent = try #require(try await harness.finalDelivery("u3", .webpush))
                #expect(sent.status == .sent)
                #expect(try await harness.repository.deliveryAddresses(owner: "u3").pushSubscriptions == [working])

                try await harness.repository.setDeliveryAddresses(DeliveryAddresses(pushSubscriptions: [lonely]), owner: "u4")
                try await harness.like(owner: "u4")
                let failed = try #require(try await harness.finalDelivery("u4", .webpush))
                #expect(failed.status == .failed)
                #expect(failed.attempts == 1, "a gone subscription is not retried")
                #expect(failed.error?.hasPrefix("gone") == true)
                #expect(try await harness.repository.deliveryAddresses(owner: "u4").pushSubscriptions.isEmpty)
                let dead = try await harness.deadLetters(.webpush)
                #expect(dead.count == 1)
                #expect(dead.first?.message.headers["Notify-Reason"] == "gone")
            }
        }
    }
}
