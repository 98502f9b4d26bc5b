import Foundation
import Testing
import TestSupport

/// `GET/PUT /v1/channels` and `POST/DELETE /v1/channels/webpush` against a
/// real gateway and store.
@Suite("Delivery addresses")
struct ChannelsTests {
    static let key = "BOr5Bz4lxvKqNUBWFOoZVBVa3DIB_fFVOPs2ZYBvXlJBHlOJ0eVj5SSJ9UrGzGLKqqWSI7b3DuWrmmhE0gFNj2U"
    static let auth = "xS03Fi5ErfTNH_l9WHE9Ig"

    @Test("addresses are stored per user; a webhook gets a secret that stays while its URL does")
    func addresses() async throws {
        try await GatewayHarness.run { harness in
            let headers = [("Authorization", "Bearer \(harness.token("u1"))")]
            let empty = try await harness.get("/v1/channels", token: harness.token("u1"))
            #expect(empty.status == 200)
            #expect(empty.body == #"{"email":null,"webpush":[],"webhook":null}"#)
            #expect(try await harness.get("/v1/channels", token: nil).status == 401)

            let body = #"{"email":"ana@example.com","webhook":{"url":"https://hooks.example.com/n"}}"#
            let put = try await httpRequest(port: harness.port, "PUT", "/v1/channels", headers: headers, body: body)
            #expect(put.status == 200)
            let webhook = try #require(put.json["webhook"] as? [String: Any])
            let secret = try #require(webhook["secret"] as? String)
            #expect(secret.hasPrefix("whsec_") && secret.count > 40)
            #expect(put.json["email"] as? String == "ana@example.com")

            let again = try await httpRequest(port: harness.port, "PUT", "/v1/channels", headers: headers, body: body)
            #expect((again.json["webhook"] as? [String: Any])?["secret"] as? String == secret, "same URL, same secret")
            let moved = try await httpRequest(
                port: harness.port, "PUT", "/v1/channels", headers: headers, body: #"{"webhook":{"url":"https://hooks.example.com/other"}}"#)
            let newSecret = try #require((moved.json["webhook"] as? [String: Any])?["secret"] as? String)
            #expect(newSecret != secret, "a new URL gets a new secret")
            #expect(moved.json["email"] is NSNull, "PUT replaces everything")

            // Another user sees only their own.
            #expect(try await harness.get("/v1/channels", token: harness.token("u2")).body == #"{"email":null,"webpush":[],"webhook":null}"#)
        }
    }

    @Test("a browser adds and removes its push subscription")
    func pushSubscriptions() async throws {
        try await GatewayHarness.run { harness in
            let headers = [("Authorization", "Bearer \(harness.token("u1"))")]
            let subscription = #"{"endpoint":"https://push.example/abc","expirationTime":null,"keys":{"p256dh":"\#(Self.key)","auth":"\#(Self.auth)"}}"#
            let added = try await httpRequest(port: harness.port, "POST", "/v1/channels/webpush", headers: headers, body: subscription)
            #expect(added.status == 200)
            #expect((added.json["webpush"] as? [Any])?.count == 1)
            // The same endpoint again replaces it rather than adding one.
            _ = try await httpRequest(port: harness.port, "POST", "/v1/channels/webpush", headers: headers, body: subscription)
            let listed = try await harness.get("/v1/channels", token: harness.token("u1"))
            #expect((listed.json["webpush"] as? [Any])?.count == 1)
            let removed = try await httpRequest(
                port: harness.port, "DELETE", "/v1/channels/webpush", headers: headers, body: #"{"endpoint":"https://push.example/abc"}"#)
            #expect(removed.status == 200)
            #expect((removed.json["webpush"] as? [Any])?.count == 0)
        }
    }

    static let badBodies: [(body: String, message: String)] = [
        (#"{"email":"not-an-address"}"#, "email must be an address"),
        (#"{"email":"a@b.example\r\nBcc: x@y.example"}"#, "email must be an address"),
        (#"{"webhook":{"url":"ftp://x.example"}}"#, "webhook must be"),
        (#"{"webhook":"https://x.example"}"#, "webhook must be an object"),
        (#"{"webpush":[{"endpoint":"https://p.example","keys":{"p256dh":"AAAA","auth":"\#(ChannelsTests.auth)"}}]}"#, "keys.p256dh must be"),
        (#"{"webpush":[{"endpoint":"https://p.example","keys":{"p256dh":"\#(ChannelsTests.key)","auth":"AAAA"}}]}"#, "keys.auth must be"),
        (#"{"sms":"+33600000000"}"#, "unknown field 'sms'"),
        ("[]", "JSON object"),
    ]

    @Test("bad addresses are refused with what to fix, and nothing is stored")
    func badAddresses() async throws {
        try await GatewayHarness.run { harness in
            let headers = [("Authorization", "Bearer \(harness.token("u1"))")]
            for (body, message) in Self.badBodies {
                let response = try await httpRequest(port: harness.port, "PUT", "/v1/channels", headers: headers, body: body)
                #expect(response.status == 400, "\(body)")
                #expect(response.body.contains(message), "\(body): \(response.body)")
            }
            #expect(try await harness.get("/v1/channels", token: harness.token("u1")).body == #"{"email":null,"webpush":[],"webhook":null}"#)
        }
    }
}
