import Crypto
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import NATS
@testable import Gateway
import NIOWebSocket
import Notifications
import Testing
import TestSupport

/// The gateway against a real nats-server, worker and SQLite file, over
/// real sockets.
@Suite("Gateway", .serialized)
struct GatewayTests {
    // MARK: HTTP routes

    @Test func healthAndMetrics() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let health = try await harness.get("/health", token: nil)
            #expect(health.status == 200)
            #expect(health.json["status"] as? String == "ok")
            #expect(health.json["nats"] as? String == "connected")
            #expect(health.json["store"] as? String == "ok")
            let metrics = try await harness.get("/metrics", token: nil)
            #expect(metrics.status == 200)
            #expect(metrics.headers["content-type"]?.hasPrefix("text/plain") == true)
            #expect(metrics.body.contains("notify_up 1"))
        }
    }

    @Test(arguments: Backend.shared)
    func theFeedListsNewestFirstWithACursorAndTheUnreadCount(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend) { (harness) async throws in
            for index in 0..<5 { try await harness.like(owner: "ana", resource: "p\(index)") }
            let token = harness.token("ana")
            #expect(await eventually { (try? await harness.get("/v1/notifications/unread_count", token: token).json["unread"] as? Int) == 5 })
            let first = try await harness.get("/v1/notifications?limit=2", token: token)
            #expect(first.status == 200)
            let items = try #require(first.json["items"] as? [[String: Any]])
            #expect(items.map { $0["resource_id"] as? String } == ["p4", "p3"])
            #expect(first.json["unread"] as? Int == 5)
            let cursor = try #require(first.json["next"] as? String)
            let second = try await harness.get("/v1/notifications?limit=2&before=\(cursor)", token: token)
            #expect((second.json["items"] as? [[String: Any]])?.map { $0["resource_id"] as? String } == ["p2", "p1"])
            let last = try await harness.get("/v1/notifications?limit=2&before=\(second.json["next"] as? String ?? "")", token: token)
            #expect((last.json["items"] as? [[String: Any]])?.map { $0["resource_id"] as? String } == ["p0"])
            #expect(last.json["next"] is NSNull, "null exactly when no older items exist")
            let defaultPage = try await harness.get("/v1/notifications", token: token)
            #expect((defaultPage.json["items"] as? [Any])?.count == 5)
            #expect(defaultPage.json["next"] is NSNull)
        }
    }

    @Test(arguments: ["limit=0", "limit=101", "limit=abc", "limit=-1", "before=not-a-cursor"])
    func badFeedParametersAre400(query: String) async throws {
        try await GatewayHarness.run { (harness) async throws in
            let response = try await harness.get("/v1/notifications?\(query)", token: harness.token("ana"))
            #expect(response.status == 400)
            let error = response.json["error"] as? [String: Any]
            #expect(error?["code"] as? String == "bad_request")
            #expect((error?["message"] as? String)?.isEmpty == false)
        }
    }

    @Test(arguments: Backend.shared)
    func markReadUpdatesTheCountAndSaysHowManyChanged(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend) { (harness) async throws in
            for index in 0..<3 { try await harness.like(owner: "ana", resource: "p\(index)") }
            let token = harness.token("ana")
            #expect(await eventually { (try? await harness.get("/v1/notifications/unread_count", token: token).json["unread"] as? Int) == 3 })
            let items = try #require(try await harness.get("/v1/notifications", token: token).json["items"] as? [[String: Any]])
            let id = try #require(items.first?["id"] as? String)
            let headers = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
            let one = try await httpRequest(port: harness.port, "POST", "/v1/notifications/read", headers: headers, body: #"{"ids":["\#(id)"]}"#)
            #expect(one.status == 200)
            #expect(one.json["updated"] as? Int == 1)
            let again = try await httpRequest(port: harness.port, "POST", "/v1/notifications/read", headers: headers, body: #"{"ids":["\#(id)"]}"#)
            #expect(again.json["updated"] as? Int == 0)
            #expect(try await harness.get("/v1/notifications/unread_count", token: token).json["unread"] as? Int == 2)
            let all = try await httpRequest(port: harness.port, "POST", "/v1/notifications/read", headers: headers, body: #"{"all":true}"#)
            #expect(all.json["updated"] as? Int == 2)
            #expect(try await harness.get("/v1/notifications/unread_count", token: token).json["unread"] as? Int == 0)
            for bad in ["", "[]", #"{"ids":[]}"#, #"{"ids":["x"]}"#, #"{"all":false}"#, #"{"ids":["\#(id)"],"all":true}"#, "not json"] {
                let response = try await httpRequest(port: harness.port, "POST", "/v1/notifications/read", headers: headers, body: bad)
                #expect(response.status == 400, "\(bad)")
            }
        }
    }

    // MARK: Authentication

    static func forged(header: String, claims: String, secret: String = GatewayHarness.secret, hs512: Bool = false, unsigned: Bool = false) -> String {
        let input = TokenVerifier.base64URLEncode(Array(header.utf8)) + "." + TokenVerifier.base64URLEncode(Array(claims.utf8))
        if unsigned { return input + "." }
        let key = SymmetricKey(data: Array(secret.utf8))
        let signature: [UInt8] = hs512
            ? Array(HMAC<SHA512>.authenticationCode(for: Array(input.utf8), using: key))
            : Array(HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: key))
        return input + "." + TokenVerifier.base64URLEncode(signature)
    }

    static let later = Int(Date().timeIntervalSince1970) + 600
    static let badTokens: [(String, String)] = [
        ("alg none", forged(header: #"{"alg":"none"}"#, claims: #"{"sub":"ana","exp":\#(later)}"#, unsigned: true)),
        ("HS512", forged(header: #"{"alg":"HS512"}"#, claims: #"{"sub":"ana","exp":\#(later)}"#, hs512: true)),
        ("wrong secret", forged(header: #"{"alg":"HS256"}"#, claims: #"{"sub":"ana","exp":\#(later)}"#, secret: "another-secret-of-thirty-two-bytes")),
        ("bad signature", forged(header: #"{"alg":"HS256"}"#, claims: #"{"sub":"ana","exp":\#(later)}"#).dropLast(4) + "AAAA"),
        ("expired", forged(header: #"{"alg":"HS256"}"#, claims: #"{"sub":"ana","exp":\#(later - 3_600)}"#)),
        ("missing exp", forged(header: #"{"alg":"HS256"}"#, claims: #"{"sub":"ana"}"#)),
        ("malformed", "not.a.jwt"),
        ("sub >", forged(header: #"{"alg":"HS256"}"#, claims: #"{"sub":">","exp":\#(later)}"#)),
        ("sub a.b", forged(header: #"{"alg":"HS256"}"#, claims: #"{"sub":"a.b","exp":\#(later)}"#)),
        ("none at all", ""),
    ]

    @Test(arguments: badTokens)
    func everyBadTokenIs401AndNoUpgrade(name: String, token: String) async throws {
        try await GatewayHarness.run { (harness) async throws in
            let api = try await harness.get("/v1/notifications", token: token.isEmpty ? nil : token)
            #expect(api.status == 401, "\(name)")
            #expect((api.json["error"] as? [String: Any])?["code"] as? String == "unauthorized")
            let viaHeader = try await harness.upgrade(headers: token.isEmpty ? [] : [("Authorization", "Bearer \(token)")])
            #expect(viaHeader.status == 401, "\(name): no upgrade with the header")
            let viaQuery = try await harness.upgrade("/ws?access_token=\(token)")
            #expect(viaQuery.status == 401, "\(name): no upgrade with the query parameter")
            #expect((viaQuery.json["error"] as? [String: Any])?["code"] as? String == "unauthorized")
        }
    }

    @Test func aGoodTokenUpgradesAndAPlainGetOfTheSocketIs426() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let upgraded = try await harness.upgrade("/ws?access_token=\(harness.token("ana"))")
            #expect(upgraded.status == 101)
            let plain = try await harness.get("/ws", token: harness.token("ana"))
            #expect(plain.status == 426)
        }
    }

    @Test(arguments: Backend.shared)
    func usersOnlyEverSeeTheirOwnNotifications(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend) { (harness) async throws in
            let ana = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("ana"))")
            let ben = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("ben"))")
            await ana.wait(for: 1)
            await ben.wait(for: 1)
            try await harness.like(owner: "ben", resource: "for-ben", trigger: "cy")
            try await harness.like(owner: "ana", resource: "for-ana", trigger: "cy")
            let anaFrames = await ana.wait(for: 2)
            let benFrames = await ben.wait(for: 2)
            try await Task.sleep(for: .milliseconds(300))
            #expect(ana.objects.compactMap { ($0["notification"] as? [String: Any])?["resource_id"] as? String } == ["for-ana"])
            #expect(ben.objects.compactMap { ($0["notification"] as? [String: Any])?["resource_id"] as? String } == ["for-ben"])
            #expect(anaFrames.first?["user"] as? String == "ana")
            #expect(benFrames.first?["user"] as? String == "ben")
            // The feed API is scoped to the token's user too.
            let feed = try await harness.get("/v1/notifications", token: harness.token("ana"))
            #expect((feed.json["items"] as? [[String: Any]])?.allSatisfy { $0["owner"] as? String == "ana" } == true)
            await ana.close()
            await ben.close()
        }
    }

    @Test func foreignOriginsAreRefusedWhenOriginsAreConfigured() async throws {
        try await GatewayHarness.run(configure: { $0.allowedOrigins = ["https://app.example.com"] }) { (harness) async throws in
            let token = harness.token("ana")
            let foreign = try await harness.upgrade("/ws?access_token=\(token)", headers: [("Origin", "https://evil.example")])
            #expect(foreign.status == 403)
            let allowed = try await harness.upgrade("/ws?access_token=\(token)", headers: [("Origin", "https://app.example.com")])
            #expect(allowed.status == 101)
            let cors = try await httpRequest(port: harness.port, "GET", "/v1/notifications", headers: [("Authorization", "Bearer \(token)"), ("Origin", "https://app.example.com")])
            #expect(cors.headers["access-control-allow-origin"] == "https://app.example.com")
            let noCors = try await httpRequest(port: harness.port, "GET", "/v1/notifications", headers: [("Authorization", "Bearer \(token)"), ("Origin", "https://evil.example")])
            #expect(noCors.headers["access-control-allow-origin"] == nil)
            let preflight = try await httpRequest(port: harness.port, "OPTIONS", "/v1/notifications/read", headers: [("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "POST")])
            #expect(preflight.status == 204)
        }
    }

    // MARK: Live delivery

    @Test(arguments: Backend.shared)
    func helloThenLiveNotificationsThenReadStateAcrossTabs(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend) { (harness) async throws in
            try await harness.like(owner: "ana", resource: "before")
            let token = harness.token("ana")
            #expect(await eventually { (try? await harness.get("/v1/notifications/unread_count", token: token).json["unread"] as? Int) == 1 })
            let tab1 = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            let tab2 = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            let hello = await tab1.wait(for: 1)
            await tab2.wait(for: 1)
            #expect(types(hello) == ["hello"])
            #expect(hello.first?["unread"] as? Int == 1)
            try await harness.like(owner: "ana", resource: "live")
            let live = await tab1.wait(for: 2)
            #expect(types(live) == ["hello", "notification.created"])
            let id = try #require(createdIDs(live).first)
            await tab2.wait(for: 2)
            let marked = try await httpRequest(port: harness.port, "POST", "/v1/notifications/read", headers: [("Authorization", "Bearer \(token)")], body: #"{"ids":["\#(id)"]}"#)
            #expect(marked.json["updated"] as? Int == 1)
            for tab in [tab1, tab2] {
                let frames = await tab.wait(for: 3)
                #expect(types(frames).last == "notification.read")
                #expect(frames.last?["ids"] as? [String] == [id])
            }
            _ = try await harness.jetStream.publish("notifications.post.unlike", payload: Array(#"{"owner":"ana","trigger_user":"ben","action":1,"resource_type":"POST","resource_id":"live","created_at":\#(Int(Date().timeIntervalSince1970))}"#.utf8))
            let deleted = await tab1.wait(for: 4)
            #expect(deleted.last?["type"] as? String == "notification.deleted")
            #expect(deleted.last?["id"] as? String == id)
            await tab1.close()
            await tab2.close()
        }
    }

    /// Disconnect, miss notifications (also while the gateway restarts),
    /// resume with `since`: exactly the missed ones, oldest first, then live.
    @Test(arguments: Backend.shared)
    func resumingAWebSocketMissesNothingAndRepeatsNothing(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend) { (harness) async throws in
            let token = harness.token("ana")
            let first = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            await first.wait(for: 1)
            for index in 0..<3 { try await harness.like(owner: "ana", resource: "seen-\(index)") }
            let seen = createdIDs(await first.wait(for: 4))
            #expect(seen.count == 3)
            await first.close()

            for index in 0..<4 { try await harness.like(owner: "ana", resource: "missed-\(index)") }
            await harness.stopGateway()
            for index in 4..<6 { try await harness.like(owner: "ana", resource: "missed-\(index)") }
            try await harness.startGateway()
            #expect(await eventually { (try? await harness.withFeedCount("ana")) == 9 })

            let resumed = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)&since=\(seen.last!)")
            let replay = await resumed.wait(for: 7)
            #expect(types(replay).first == "hello")
            let resources = replay.compactMap { ($0["notification"] as? [String: Any])?["resource_id"] as? String }
            #expect(resources == (0..<6).map { "missed-\($0)" })
            try await harness.like(owner: "ana", resource: "live-after")
            let all = await resumed.wait(for: 8)
            let ids = createdIDs(all)
            #expect(Set(ids).count == ids.count, "no duplicates")
            #expect(ids.count == 7)
            #expect((all.last?["notification"] as? [String: Any])?["resource_id"] as? String == "live-after")
            await resumed.close()
        }
    }

    @Test(arguments: Backend.shared)
    func likesOnOneResourceArriveAsOneGroupThatUpdatesLive(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend, aggregateWindow: .seconds(3_600)) { (harness) async throws in
            let token = harness.token("ana")
            let client = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            await client.wait(for: 1)
            try await harness.like(owner: "ana", resource: "p1", trigger: "ben")
            let created = try #require(createdIDs(await client.wait(for: 2)).first)
            try await harness.like(owner: "ana", resource: "p1", trigger: "cy")
            try await harness.like(owner: "ana", resource: "p1", trigger: "dee")
            let frames = await client.wait(for: 4)
            #expect(types(frames) == ["hello", "notification.created", "notification.updated", "notification.updated"])
            let first = try #require(frames[2]["notification"] as? [String: Any])
            let latest = try #require(frames[3]["notification"] as? [String: Any])
            #expect(frames[2]["replaces"] as? String == created)
            #expect(frames[3]["replaces"] as? String == first["id"] as? String)
            #expect(latest["group_id"] as? String == created)
            #expect(latest["actor_count"] as? Int == 3)
            #expect((latest["actors"] as? [[String: Any]])?.map { $0["trigger_user"] as? String } == ["dee", "cy", "ben"])
            let id = try #require(latest["id"] as? String)

            // The feed shows the group; its actors page newest first.
            let feed = try await harness.get("/v1/notifications", token: token)
            #expect((feed.json["items"] as? [[String: Any]])?.map { $0["id"] as? String } == [id])
            #expect(feed.json["unread"] as? Int == 1)
            let page = try await harness.get("/v1/notifications/\(id)/actors?limit=2", token: token)
            #expect(page.status == 200)
            #expect((page.json["items"] as? [[String: Any]])?.map { $0["trigger_user"] as? String } == ["dee", "cy"])
            #expect(page.json["actor_count"] as? Int == 3)
            let cursor = try #require(page.json["next"] as? String)
            let rest = try await harness.get("/v1/notifications/\(id)/actors?limit=2&before=\(cursor)", token: token)
            #expect((rest.json["items"] as? [[String: Any]])?.map { $0["trigger_user"] as? String } == ["ben"])
            #expect(rest.json["next"] is NSNull)
            #expect(try await harness.get("/v1/notifications/\(id)/actors", token: harness.token("bob")).status == 404)
            #expect(try await harness.get("/v1/notifications/not-an-id/actors", token: token).status == 400)

            // An unlike updates the group in place; the last one deletes it.
            try await harness.like(owner: "ana", resource: "p1", trigger: "dee", kind: "post.unlike")
            let afterUnlike = await client.wait(for: 5)
            let updated = try #require(afterUnlike[4]["notification"] as? [String: Any])
            #expect(types(afterUnlike).last == "notification.updated")
            #expect(updated["id"] as? String == id)
            #expect(afterUnlike[4]["replaces"] == nil)
            #expect(updated["actor_count"] as? Int == 2)
            #expect(updated["trigger_user"] as? String == "cy")

            // Resuming from the first id replays the group as it is now, once.
            let resumed = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)&since=\(created)")
            let replay = await resumed.wait(for: 2)
            #expect(types(replay) == ["hello", "notification.created"])
            #expect((replay[1]["notification"] as? [String: Any])?["actor_count"] as? Int == 2)
            await resumed.close()

            try await harness.like(owner: "ana", resource: "p1", trigger: "cy", kind: "post.unlike")
            try await harness.like(owner: "ana", resource: "p1", trigger: "ben", kind: "post.unlike")
            let end = await client.wait(for: 7)
            #expect(types(end).suffix(2) == ["notification.updated", "notification.deleted"])
            #expect(end.last?["id"] as? String == id)
            #expect(await eventually { (try? await harness.withFeedCount("ana")) == 0 })
            await client.close()
        }
    }

    @Test func preferencesMuteEventsAndQuietHoursHoldNotificationsForASummary() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let token = harness.token("ana")
            let headers = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
            let initial = try await harness.get("/v1/preferences", token: token)
            #expect(initial.status == 200)
            #expect(initial.body == #"{"muted_kinds":[],"muted_resources":[],"muted_channels":[],"quiet_hours":null}"#)
            let bad = try await httpRequest(port: harness.port, "PUT", "/v1/preferences", headers: headers, body: #"{"muted_kinds":["nope"]}"#)
            #expect(bad.status == 400)
            #expect(bad.body.contains("muted_kinds holds event kinds"))
            #expect(try await harness.get("/v1/preferences", token: nil).status == 401)

            let client = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            await client.wait(for: 1)
            let body = #"{"muted_resources":[{"resource_type":"POST","resource_id":"muted"}],"quiet_hours":\#(quietHoursNow())}"#
            let put = try await httpRequest(port: harness.port, "PUT", "/v1/preferences", headers: headers, body: body)
            #expect(put.status == 200)
            #expect(types(await client.wait(for: 2)) == ["hello", "preferences.updated"])
            #expect(try await harness.get("/v1/preferences", token: token).body == put.body)

            // Muted: never stored. Quiet: stored, not pushed.
            try await harness.like(owner: "ana", resource: "muted")
            try await harness.like(owner: "ana", resource: "quiet-1")
            try await harness.like(owner: "ana", resource: "quiet-2")
            #expect(await eventually { (try? await harness.withFeedCount("ana")) == 2 })
            let feed = try await harness.get("/v1/notifications", token: token)
            let items = try #require(feed.json["items"] as? [[String: Any]])
            #expect(items.map { $0["resource_id"] as? String } == ["quiet-2", "quiet-1"])
            try await Task.sleep(for: .milliseconds(300))
            #expect(await client.wait(for: 2).count == 2, "nothing pushed during quiet hours")

            // Quiet hours off: the summary of what was held comes at once.
            let off = try await httpRequest(port: harness.port, "PUT", "/v1/preferences", headers: headers, body: #"{"quiet_hours":null}"#)
            #expect(off.status == 200)
            let frames = await client.wait(for: 4)
            #expect(types(frames) == ["hello", "preferences.updated", "quiet_hours.summary", "preferences.updated"])
            #expect(frames[2]["count"] as? Int == 2)
            #expect(frames[2]["first"] as? String == items[1]["id"] as? String)
            #expect(frames[2]["last"] as? String == items[0]["id"] as? String)
            // And new notifications are pushed again.
            try await harness.like(owner: "ana", resource: "after")
            #expect(types(await client.wait(for: 5)).last == "notification.created")
            await client.close()
        }
    }

    @Test func clientsAcknowledgeFramesAndTheFeedShowsDeliveredSeenAndRead() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let token = harness.token("ana")
            let client = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            await client.wait(for: 1)
            try await harness.like(owner: "ana", resource: "p1")
            try await harness.like(owner: "ana", resource: "p2")
            let ids = createdIDs(await client.wait(for: 3))
            try #require(ids.count == 2)
            func states() async throws -> [String] {
                let feed = try await harness.get("/v1/notifications", token: token)
                return ((feed.json["items"] as? [[String: Any]]) ?? []).reversed().compactMap { $0["state"] as? String }
            }
            #expect(try await states() == ["created", "created"])

            client.send(#"{"type":"ack","ids":["\#(ids[0])","\#(ids[1])"]}"#)
            #expect(await eventually { (try? await states()) == ["delivered", "delivered"] })
            client.send(#"{"type":"seen","ids":["\#(ids[1])"]}"#)
            #expect(await eventually { (try? await states()) == ["delivered", "seen"] })

            // A frame the gateway cannot take is answered, and the connection stays.
            client.send(#"{"type":"subscribe","room":"x"}"#)
            client.send("not json")
            let errors = await client.wait(for: 5).filter { $0["type"] as? String == "error" }
            #expect(errors.count == 2)
            #expect((errors.first?["message"] as? String)?.contains("unknown frame type 'subscribe'") == true)

            // Without a WebSocket (SSE), receipts are posted.
            let headers = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
            let posted = try await httpRequest(port: harness.port, "POST", "/v1/notifications/receipts", headers: headers, body: #"{"seen":["\#(ids[0])"]}"#)
            #expect(posted.status == 202)
            #expect(posted.json["accepted"] as? Int == 1)
            #expect(try await states() == ["seen", "seen"])
            for bad in [#"{"seen":[]}"#, #"{"seen":["nope"]}"#, #"{"ack":["\#(ids[0])"]}"#, "[]"] {
                let refused = try await httpRequest(port: harness.port, "POST", "/v1/notifications/receipts", headers: headers, body: bad)
                #expect(refused.status == 400, "\(bad)")
            }

            let read = try await httpRequest(port: harness.port, "POST", "/v1/notifications/read", headers: headers, body: #"{"all":true}"#)
            #expect(read.json["updated"] as? Int == 2)
            #expect(try await states() == ["read", "read"])
            await client.close()
        }
    }

    @Test func aScheduledNotificationArrivesAtItsTimeAndHighPriorityPassesQuietHours() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let token = harness.token("ana")
            let client = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            await client.wait(for: 1)
            let deliverAt = Int(Date().timeIntervalSince1970) + 2
            try await harness.like(owner: "ana", resource: "later", extra: #","deliver_at":\#(deliverAt)"#)
            try await harness.like(owner: "ana", resource: "now")
            let first = await client.wait(for: 2)
            #expect((first.last?["notification"] as? [String: Any])?["resource_id"] as? String == "now")
            #expect(try await harness.withFeedCount("ana") == 1, "not in the feed before its time")
            let frames = await client.wait(for: 3, timeout: .seconds(15))
            let released = try #require(frames.last?["notification"] as? [String: Any])
            #expect(released["resource_id"] as? String == "later")
            let receivedAt = try #require(released["received_at"] as? Int)
            #expect(receivedAt >= deliverAt * 1000, "not before deliver_at")
            #expect(try await harness.withFeedCount("ana") == 2)

            // Quiet hours now: a normal like is held, a high-priority one is pushed.
            let headers = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
            let quiet = #"{"quiet_hours":\#(quietHoursNow())}"#
            #expect(try await httpRequest(port: harness.port, "PUT", "/v1/preferences", headers: headers, body: quiet).status == 200)
            await client.wait(for: 4)
            try await harness.like(owner: "ana", resource: "held")
            try await harness.like(owner: "ana", resource: "urgent", extra: #","priority":"high""#)
            let pushed = await client.wait(for: 5)
            #expect(types(pushed).last == "notification.created")
            #expect((pushed.last?["notification"] as? [String: Any])?["resource_id"] as? String == "urgent")
            #expect(await eventually { (try? await harness.withFeedCount("ana")) == 4 })
            try await Task.sleep(for: .milliseconds(300))
            #expect(await client.wait(for: 5).count == 5, "the normal one is held")
            await client.close()
        }
    }

    @Test func oneActorOverItsRateFoldsIntoOneNotification() async throws {
        let limits = ThrottleLimits(triggerUser: .init(perMinute: 1, burst: 2))
        try await GatewayHarness.run(throttle: limits) { (harness) async throws in
            let token = harness.token("ana")
            let client = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            await client.wait(for: 1)
            for index in 0..<6 { try await harness.like(owner: "ana", resource: "p\(index)", trigger: "ben") }
            try await harness.like(owner: "ana", resource: "p0", trigger: "cy")
            let frames = await client.wait(for: 8)
            #expect(types(frames) == ["hello"] + Array(repeating: "notification.created", count: 3)
                + Array(repeating: "notification.updated", count: 3) + ["notification.created"])
            #expect(await eventually { (try? await harness.withFeedCount("ana")) == 4 })
            let feed = try await harness.get("/v1/notifications", token: token)
            let items = try #require(feed.json["items"] as? [[String: Any]])
            #expect(items.map { $0["resource_id"] as? String } == ["p0", "p5", "p1", "p0"])
            #expect(items[0]["trigger_user"] as? String == "cy")
            #expect(items[1]["throttled"] as? Bool == true)
            #expect(items[1]["actor_count"] as? Int == 4, "p2 to p5, folded")
            #expect(items[2]["throttled"] == nil)
            await client.close()
        }
    }

    @Test func aSinceThatCannotBeReplayedAsksTheClientToReload() async throws {
        try await GatewayHarness.run(configure: { $0.maxReplay = 2 }) { (harness) async throws in
            let token = harness.token("ana")
            for index in 0..<4 { try await harness.like(owner: "ana", resource: "r\(index)") }
            #expect(await eventually { (try? await harness.withFeedCount("ana")) == 4 })
            let behind = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)&since=00000000000000000000000000")
            #expect(types(await behind.wait(for: 2)) == ["hello", "reset"])
            let garbage = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)&since=garbage")
            #expect(types(await garbage.wait(for: 2)) == ["hello", "reset"])
            await behind.close()
            await garbage.close()
        }
    }

    @Test func aSlowClientIsClosedWith1013WhileAFastOneKeepsReceiving() async throws {
        try await GatewayHarness.run(configure: { $0.clientQueueLimit = 2_048 }) { (harness) async throws in
            let token = harness.token("ana")
            let fast = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            let slow = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)", readAfter: .seconds(4))
            await fast.wait(for: 1)
            try await Task.sleep(for: .milliseconds(200))
            // Enough to fill the slow client's socket buffers and then its queue.
            let excerpt = String(repeating: "x", count: 270)
            let publisher = try JetStreamAsyncPublisher(connection: harness.connection)
            let count = 12_000
            try await publisher.publish((0..<count).map { index in
                .init(subject: "notifications.post.like", payload: Array(#"{"owner":"ana","trigger_user":"ben","username":"\#(String(repeating: "u", count: 120))","user_bio":"\#(String(repeating: "b", count: 500))","action":1,"resource_type":"POST","resource_id":"bulk-\#(index)","excerpt":"\#(excerpt)","created_at":\#(Int(Date().timeIntervalSince1970))}"#.utf8))
            })
            try await publisher.waitForAcks()
            let fastFrames = await fast.wait(for: count + 1, timeout: .seconds(60))
            #expect(createdIDs(fastFrames).count == count)
            let closed = await slow.closedByServer(timeout: .seconds(30))
            #expect(closed?.closeCode == .unknown(1013))
            #expect(closed?.reason?.contains("since=") == true)
            #expect(slow.texts.count < count, "the slow client did not get everything")
            await fast.close()
        }
    }

    @Test func anInboundFrameOver64KiBIsClosedWith1009() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let big = String(repeating: "x", count: 65_537)
            let client = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("ana"))", send: [big])
            let closed = await client.closedByServer()
            #expect(closed?.closeCode == .messageTooLarge)
        }
    }

    @Test func aFragmentedMessageOver64KiBIsClosedWith1009() async throws {
        try await GatewayHarness.run { (harness) async throws in
            var logger = Logger(label: "ws-client")
            logger.logLevel = .critical
            let half = ByteBuffer(repeating: UInt8(ascii: "x"), count: 40_000)
            let closed = try await WebSocketClient.connect(
                url: "ws://127.0.0.1:\(harness.port)/ws?access_token=\(harness.token("ana"))", logger: logger
            ) { inbound, outbound, _ in
                // Each frame is under the limit; the message is not.
                try await outbound.write(.custom(WebSocketFrame(fin: false, opcode: .text, data: half)))
                try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .continuation, data: half)))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { for try await _ in inbound {} }
                    group.addTask {
                        // Not closed by the server: end the test with our own close code.
                        try await Task.sleep(for: .seconds(5))
                        try await outbound.close(.normalClosure, reason: nil)
                    }
                    try await group.next()
                    group.cancelAll()
                }
            }
            #expect(closed?.closeCode == .messageTooLarge)
        }
    }

    @Test func aClientThatStopsAnsweringPingsIsClosed() async throws {
        try await GatewayHarness.run(configure: { $0.pingInterval = .seconds(1) }) { (harness) async throws in
            let connection = try RawHTTPConnection(port: harness.port)
            try connection.send("GET", "/ws?access_token=\(harness.token("ana"))", headers: [
                ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ])
            let clock = ContinuousClock()
            let start = clock.now
            // This client reads but never answers a ping.
            let received = await connection.read(timeout: .seconds(30)) { _ in false }
            #expect(received.hasPrefix("HTTP/1.1 101"))
            #expect(received.contains(#""type":"hello""#))
            #expect(received.contains("ping timeout"), "the close frame's reason")
            // About 2 s; the bound leaves room for a loaded 2-core machine
            // running other suites at once.
            #expect(clock.now - start < .seconds(20), "closed by the server after two silent intervals")
        }
    }

    @Test func aConnectionThatSendsNoRequestIsClosedAfterTheHandshakeTimeout() async throws {
        try await GatewayHarness.run(configure: { $0.handshakeTimeout = .seconds(1) }) { (harness) async throws in
            let connection = try RawHTTPConnection(port: harness.port)
            let clock = ContinuousClock()
            let start = clock.now
            let received = await connection.read(timeout: .seconds(60)) { _ in false }
            #expect(received.isEmpty)
            // About 1 s; the bound leaves room for a loaded 2-core machine.
            #expect(clock.now - start < .seconds(30), "closed by the server, not by the read's timeout")
        }
    }

    @Test func aSocketWhoseTokenExpiresIsClosedWith1008() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let client = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("ana", expiresIn: 2))")
            await client.wait(for: 1)
            let closed = await client.closedByServer(timeout: .seconds(10))
            #expect(closed?.closeCode == .policyViolation)
            #expect(closed?.reason == "token expired")
        }
    }

    @Test func aNATSReconnectAsksLiveClientsToResumeFromTheStore() async throws {
        // Frames published while the gateway reconnects (to another node of
        // a cluster) never reach it: its clients are closed with 1012 and
        // the id to resume from, and a resume replays what they missed.
        try await GatewayHarness.run { (harness) async throws in
            let token = harness.token("ana")
            let client = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            await client.wait(for: 1)
            try await harness.like(owner: "ana", resource: "before")
            let received = createdIDs(await client.wait(for: 2))
            #expect(received.count == 1)
            await harness.server.stop()
            let restarted = try await harness.server.restarted()
            do {
                let closed = await client.closedByServer(timeout: .seconds(15))
                #expect(closed?.closeCode == .unknown(1012))
                #expect(closed?.reason == "NATS reconnected; reconnect with since=\(received.first ?? "-")")
                // Stored while the client was away: the resume replays it.
                try await harness.like(owner: "ana", resource: "while-away")
                #expect(try await eventually { try await harness.get("/v1/notifications/unread_count", token: token).json["unread"] as? Int == 2 })
                let resumed = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)&since=\(received.first ?? "")")
                let frames = await resumed.wait(for: 2)
                #expect(types(frames) == ["hello", "notification.created"])
                #expect((frames.last?["notification"] as? [String: Any])?["resource_id"] as? String == "while-away")
                await resumed.close()
            } catch {
                await restarted.stop()
                throw error
            }
            await restarted.stop()
        }
    }

    @Test func shuttingDownClosesWebSocketsWith1001() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let client = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("ana"))")
            await client.wait(for: 1)
            await harness.stopGateway()
            let closed = await client.closedByServer(timeout: .seconds(10))
            #expect(closed?.closeCode == .goingAway)
            try await harness.startGateway()
        }
    }

    // MARK: Server-Sent Events

    @Test(arguments: Backend.shared)
    func serverSentEventsCarryTheSameFramesAndResumeWithLastEventID(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend) { (harness) async throws in
            let token = harness.token("ana")
            let stream = try RawHTTPConnection(port: harness.port)
            try stream.send("GET", "/v1/notifications/stream", headers: [("Authorization", "Bearer \(token)")])
            let opening = await stream.read { $0.contains(#""type":"hello""#) }
            #expect(opening.contains("HTTP/1.1 200"))
            #expect(opening.lowercased().contains("content-type: text/event-stream"))
            try await harness.like(owner: "ana", resource: "first")
            let live = await stream.read { $0.contains("\"first\"") && $0.contains("\n\n") }
            // "\r\n" is one Character: split on every kind of line break.
            let id = try #require(live.split(whereSeparator: \.isNewline).first { $0.hasPrefix("id: ") }.map { String($0.dropFirst(4)) })
            #expect(NotificationIDGenerator.isValid(id))
            #expect(live.contains("data: {\"type\":\"notification.created\""))

            try await harness.like(owner: "ana", resource: "missed")
            #expect(await eventually { (try? await harness.withFeedCount("ana")) == 2 })
            let resumed = try RawHTTPConnection(port: harness.port)
            try resumed.send("GET", "/v1/notifications/stream?access_token=\(token)", headers: [("Last-Event-ID", id)])
            let replay = await resumed.read { $0.contains("\"missed\"") }
            #expect(replay.contains("\"missed\""))
            #expect(!replay.contains("\"first\""), "not sent again")
        }
    }

    @Test func shuttingDownEndsEventStreams() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let stream = try RawHTTPConnection(port: harness.port)
            try stream.send("GET", "/v1/notifications/stream?access_token=\(harness.token("ana"))")
            _ = await stream.read { $0.contains("hello") }
            let clock = ContinuousClock()
            let start = clock.now
            await harness.stopGateway()
            let ended = await stream.read(timeout: .seconds(10)) { $0.hasSuffix("0\r\n\r\n") }
            #expect(ended.hasSuffix("0\r\n\r\n"), "the chunked stream ended")
            #expect(clock.now - start < .seconds(8))
            try await harness.startGateway()
        }
    }

    // MARK: Development page

    @Test func theDemoPageAndTokenEndpointExistOnlyInDevelopment() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let page = try await harness.get("/", token: nil)
            #expect(page.status == 200)
            #expect(page.body.contains("<title>notify demo</title>"))
            let token = try await httpRequest(port: harness.port, "POST", "/dev/token", body: #"{"user":"ana"}"#)
            #expect(token.status == 200)
            let issued = try #require(token.json["token"] as? String)
            #expect(try await harness.get("/v1/notifications", token: issued).status == 200)
            let bad = try await httpRequest(port: harness.port, "POST", "/dev/token", body: #"{"user":"a.b"}"#)
            #expect(bad.status == 400)
        }
        try await GatewayHarness.run(configure: { $0.production = true; $0.allowedOrigins = ["https://app.example.com"] }) { (harness) async throws in
            #expect(try await harness.get("/", token: nil).status == 404)
            #expect(try await httpRequest(port: harness.port, "POST", "/dev/token", body: #"{"user":"ana"}"#).status == 404)
        }
    }
}

extension GatewayHarness {
    /// How many notifications the store holds for `owner`.
    func withFeedCount(_ owner: String) async throws -> Int {
        try await get("/v1/notifications?limit=100", token: token(owner)).json["items"].map { ($0 as? [Any])?.count ?? 0 } ?? 0
    }
}

/// Quiet hours (UTC) from a minute ago to ten minutes from now, as JSON.
func quietHoursNow() -> String {
    let minute = Int(Date().timeIntervalSince1970) / 60
    func clock(_ minutes: Int) -> String {
        let wrapped = ((minutes % 1_440) + 1_440) % 1_440
        return String(format: "%02d:%02d", wrapped / 60, wrapped % 60)
    }
    return #"{"start":"\#(clock(minute - 1))","end":"\#(clock(minute + 10))","time_zone":"UTC"}"#
}
