import Foundation
import Gateway
import Notifications
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

    @Test("an email's unsubscribe link: GET asks, POST (one-click) mutes email; an altered link changes nothing")
    func unsubscribe() async throws {
        try await GatewayHarness.run { harness in
            // The dispatcher signs with the same secret (JWT_SECRET here).
            let links = UnsubscribeLinks(baseURL: "http://127.0.0.1:\(harness.port)", secret: GatewayHarness.secret)
            let url = try #require(URLComponents(string: links.url(owner: "u_1-x", channel: .email)))
            let path = url.percentEncodedPath + "?" + (url.percentEncodedQuery ?? "")
            let page = try await httpRequest(port: harness.port, "GET", path)
            #expect(page.status == 200)
            #expect(page.body.contains("<form method=\"post\""))
            let preferences = { try await harness.get("/v1/preferences", token: harness.token("u_1-x")).json["muted_channels"] as? [String] }
            #expect(try await preferences() ?? [] == [], "a GET (a mail scanner following the link) changes nothing")

            let altered = path.replacingOccurrences(of: "channel=email", with: "channel=webhook")
            #expect(try await httpRequest(port: harness.port, "POST", altered).status == 400)
            let otherUser = path.replacingOccurrences(of: "user=u_1-x", with: "user=u_2-x")
            #expect(try await httpRequest(port: harness.port, "POST", otherUser).status == 400)
            #expect(try await httpRequest(port: harness.port, "POST", "/v1/unsubscribe?user=u1&channel=email").status == 400)
            #expect(try await preferences() ?? [] == [])

            let oneClick = try await httpRequest(
                port: harness.port, "POST", path, headers: [("Content-Type", "application/x-www-form-urlencoded")], body: "List-Unsubscribe=One-Click")
            #expect(oneClick.status == 200)
            #expect(try await preferences() == ["email"])
            // Again: still 200, still muted once.
            #expect(try await httpRequest(port: harness.port, "POST", path).status == 200)
            #expect(try await preferences() == ["email"])
        }
    }

    @Test("GET /v1/channels/webpush/key gives the VAPID public key, without a token; 404 when Web Push is off")
    func vapidKey() async throws {
        try await GatewayHarness.run(configure: { $0.vapidPublicKey = ChannelsTests.key }) { harness in
            let response = try await harness.get("/v1/channels/webpush/key", token: nil)
            #expect(response.status == 200)
            #expect(response.json["public_key"] as? String == Self.key)
        }
        try await GatewayHarness.run { harness in
            let response = try await harness.get("/v1/channels/webpush/key", token: nil)
            #expect(response.status == 404)
            #expect(response.body.contains("VAPID_PRIVATE_KEY"))
        }
    }
}
