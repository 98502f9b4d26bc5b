import Foundation
@testable import Gateway
import NATS
import Notifications
import Testing
import TestSupport

/// Channel and global rooms end to end: events on room subjects, stored
/// once per room by the worker, delivered to the clients that joined.
@Suite("Rooms", .serialized)
struct RoomTests {
    @Test(arguments: Backend.shared)
    func aRoomEventIsStoredOnceAndReachesOnlyTheClientsThatJoined(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend) { (harness) async throws in
            // Ana joins before `hello` arrives (as a browser does on open).
            let ana = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("ana"))", send: [#"{"type":"join","room":"channel:live1"}"#])
            let ben = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("ben"))", send: [#"{"type":"join","room":"global"}"#])
            let cy = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("cy"))")
            #expect(types(await ana.wait(for: 2)) == ["hello", "joined"])
            #expect(ana.objects.last?["room"] as? String == "channel:live1")
            #expect(types(await ben.wait(for: 2)) == ["hello", "joined"])
            await cy.wait(for: 1)

            try await harness.roomEvent("channel.live1", resource: "stream-1")
            try await harness.roomEvent("global", resource: "announcement")
            let anaFrames = await ana.wait(for: 3)
            let benFrames = await ben.wait(for: 3)
            #expect(types(anaFrames) == ["hello", "joined", "notification.created"])
            #expect(anaFrames.last?["room"] as? String == "channel:live1")
            let record = try #require(anaFrames.last?["notification"] as? [String: Any])
            #expect(record["room"] as? String == "channel:live1")
            #expect(record["resource_id"] as? String == "stream-1")
            #expect((benFrames.last?["notification"] as? [String: Any])?["resource_id"] as? String == "announcement")
            // A personal notification after the room events: whoever did not
            // join sees only it.
            try await harness.like(owner: "cy", resource: "own")
            let cyFrames = await cy.wait(for: 2)
            #expect(types(cyFrames) == ["hello", "notification.created"])
            #expect((cyFrames.last?["notification"] as? [String: Any])?["resource_id"] as? String == "own")
            try await harness.like(owner: "ana", resource: "own")
            try await harness.like(owner: "ben", resource: "own", trigger: "cy")
            #expect(types(await ana.wait(for: 4)) == ["hello", "joined", "notification.created", "notification.created"])
            #expect(createdIDs(await ben.wait(for: 4)).count == 2, "global, then ben's own; not the channel's")

            // Stored once, in the room: not in anyone's feed or unread count.
            let history = try await harness.get("/v1/rooms/channel:live1/notifications", token: harness.token("cy"))
            #expect(history.status == 200)
            let items = try #require(history.json["items"] as? [[String: Any]])
            #expect(items.count == 1)
            #expect(items.first?["id"] as? String == record["id"] as? String)
            #expect(history.json["room"] as? String == "channel:live1")
            #expect(try await harness.withFeedCount("ana") == 1)
            let unread = try await harness.get("/v1/notifications/unread_count", token: harness.token("ana"))
            #expect(unread.json["unread"] as? Int == 1)

            // A retraction on the room's subject removes it for the room.
            try await harness.roomEvent("channel.live1", kind: "post.unlike", resource: "stream-1")
            let deleted = await ana.wait(for: 5)
            #expect(deleted.last?["type"] as? String == "notification.deleted")
            #expect(deleted.last?["room"] as? String == "channel:live1")
            #expect(deleted.last?["id"] as? String == record["id"] as? String)

            // After leaving, the room's events stop.
            ana.send(#"{"type":"leave","room":"channel:live1"}"#)
            #expect(types(await ana.wait(for: 6)).last == "left")
            try await harness.roomEvent("channel.live1", resource: "stream-2")
            try await harness.like(owner: "ana", resource: "after-leaving")
            let after = await ana.wait(for: 7)
            #expect((after.last?["notification"] as? [String: Any])?["resource_id"] as? String == "after-leaving")
            #expect(!ana.texts.contains { $0.contains("stream-2") })
            for socket in [ana, ben, cy] { await socket.close() }
        }
    }

    /// Joining with `since` replays what the room had after it, oldest
    /// first, then goes live: nothing missed, nothing twice.
    @Test func joiningWithSinceReplaysWhatTheRoomMissed() async throws {
        try await GatewayHarness.run { (harness) async throws in
            for index in 0..<3 { try await harness.roomEvent("channel.talk", resource: "earlier-\(index)") }
            let token = harness.token("ana")
            #expect(await eventually {
                ((try? await harness.get("/v1/rooms/channel:talk/notifications", token: token).json["items"]) as? [Any])?.count == 3
            })
            let history = try await harness.get("/v1/rooms/channel:talk/notifications?limit=2", token: token)
            let page = try #require(history.json["items"] as? [[String: Any]])
            #expect(page.compactMap { $0["resource_id"] as? String } == ["earlier-2", "earlier-1"], "newest first")
            let cursor = try #require(history.json["next"] as? String)
            let rest = try await harness.get("/v1/rooms/channel:talk/notifications?limit=2&before=\(cursor)", token: token)
            let oldest = try #require((rest.json["items"] as? [[String: Any]])?.first)
            #expect(oldest["resource_id"] as? String == "earlier-0")
            #expect(rest.json["next"] is NSNull)

            let socket = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            await socket.wait(for: 1)
            socket.send(#"{"type":"join","room":"channel:talk","since":"\#(oldest["id"] as! String)"}"#)
            let joined = await socket.wait(for: 4)
            #expect(types(joined) == ["hello", "notification.created", "notification.created", "joined"])
            #expect(joined.compactMap { ($0["notification"] as? [String: Any])?["resource_id"] as? String } == ["earlier-1", "earlier-2"])
            try await harness.roomEvent("channel.talk", resource: "live")
            let live = await socket.wait(for: 5)
            #expect((live.last?["notification"] as? [String: Any])?["resource_id"] as? String == "live")
            let ids = createdIDs(live)
            #expect(Set(ids).count == ids.count)
            // Joining again is answered, and delivers nothing twice.
            socket.send(#"{"type":"join","room":"channel:talk"}"#)
            #expect(types(await socket.wait(for: 6)).last == "joined")
            try await harness.roomEvent("channel.talk", resource: "once")
            await socket.wait(for: 7)
            try? await Task.sleep(for: .milliseconds(300))
            #expect(socket.texts.filter { $0.contains("\"once\"") }.count == 1)
            await socket.close()
        }
    }

    @Test func userRoomsArePrivateAndBadRoomsAreRefused() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let token = harness.token("ana")
            #expect(try await harness.get("/v1/rooms/user:ben/notifications", token: token).status == 403)
            #expect(try await harness.get("/v1/rooms/user:ana/notifications", token: token).status == 200)
            #expect(try await harness.get("/v1/rooms/global/notifications", token: nil).status == 401)
            for bad in ["channel:", "channel:a.b", "lobby", "channel:" + String(repeating: "x", count: 129)] {
                let response = try await harness.get("/v1/rooms/\(bad)/notifications", token: token)
                #expect(response.status == 400, "\(bad)")
            }
            #expect(try await harness.get("/v1/rooms/channel%3Alive/notifications", token: token).status == 200)

            let socket = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            await socket.wait(for: 1)
            socket.send(#"{"type":"join","room":"user:ben"}"#)
            socket.send(#"{"type":"join","room":"lobby"}"#)
            socket.send(#"{"type":"join","room":"global","since":"yesterday"}"#)
            socket.send(#"{"type":"join","room":"user:ana"}"#)
            let frames = await socket.wait(for: 5)
            #expect(types(frames) == ["hello", "error", "error", "error", "joined"])
            #expect((frames[1]["message"] as? String)?.contains("private") == true)
            #expect((frames[2]["message"] as? String)?.contains("channel:<id>") == true)
            #expect((frames[3]["message"] as? String)?.contains("since") == true)
            #expect(frames[4]["room"] as? String == "user:ana")
            await socket.close()
        }
    }

    @Test func aConnectionJoinsAtMostItsLimitOfRooms() async throws {
        try await GatewayHarness.run(configure: { $0.maxRoomsPerConnection = 2 }) { (harness) async throws in
            let socket = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("ana"))")
            await socket.wait(for: 1)
            for id in ["a", "b", "c"] { socket.send(#"{"type":"join","room":"channel:\#(id)"}"#) }
            let frames = await socket.wait(for: 4)
            #expect(types(frames).filter { $0 == "joined" }.count == 2)
            #expect(frames.contains { ($0["message"] as? String)?.contains("at most 2 rooms") == true })
            let refused = try await harness.get("/v1/notifications/stream?rooms=channel:a,channel:b,global", token: harness.token("ana"))
            #expect(refused.status == 400)
            await socket.close()
        }
    }

    /// SSE joins rooms with `?rooms=`; its `id:` carries both cursors, so
    /// `Last-Event-ID` resumes the user's feed and the rooms'.
    @Test(arguments: Backend.shared)
    func serverSentEventsJoinRoomsAndResumeThem(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend) { (harness) async throws in
            let token = harness.token("ana")
            let stream = try RawHTTPConnection(port: harness.port)
            try stream.send("GET", "/v1/notifications/stream?rooms=channel:live1,global", headers: [("Authorization", "Bearer \(token)")])
            #expect(await stream.read { $0.contains(#""type":"hello""#) }.contains("HTTP/1.1 200"))
            try await harness.roomEvent("channel.live1", resource: "seen-room")
            let live = await stream.read { eventEnds(after: "\"seen-room\"", in: $0) }
            let id = try #require(live.split(whereSeparator: \.isNewline).last { $0.hasPrefix("id: ") }.map { String($0.dropFirst(4)) })
            #expect(id.hasPrefix("~"), "no user notification yet: \(id)")
            #expect(NotificationIDGenerator.isValid(String(id.dropFirst())))

            try await harness.roomEvent("global", resource: "missed-room")
            try await harness.like(owner: "ana", resource: "missed-own")
            #expect(await eventually { (try? await harness.withFeedCount("ana")) == 1 })
            #expect(await eventually {
                ((try? await harness.get("/v1/rooms/global/notifications", token: token).json["items"]) as? [Any])?.count == 1
            })
            let resumed = try RawHTTPConnection(port: harness.port)
            try resumed.send("GET", "/v1/notifications/stream?rooms=channel:live1,global&access_token=\(token)", headers: [("Last-Event-ID", id)])
            let replay = await resumed.read { eventEnds(after: "\"missed-room\"", in: $0) }
            #expect(replay.contains("\"missed-room\""))
            #expect(!replay.contains("\"seen-room\""), "not sent again")
            let ids = replay.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("id: ") }
            #expect(ids.last?.contains("~") == true)
            #expect(try await harness.get("/v1/notifications/stream?rooms=user:ben", token: token).status == 403)
        }
    }
}

/// Whether the SSE event holding `marker` has ended in `text`.
private func eventEnds(after marker: String, in text: String) -> Bool {
    guard let range = text.range(of: marker) else { return false }
    return text[range.upperBound...].contains("\n\n")
}

extension GatewayHarness {
    /// Publishes an event on `notifications.<room>.<kind>` (`room` is
    /// `channel.<id>` or `global`): no owner, the room is the audience.
    func roomEvent(_ room: String, kind: String = "post.like", trigger: String = "dee", resource: String) async throws {
        let body = #"{"trigger_user":"\#(trigger)","action":1,"resource_type":"POST","resource_id":"\#(resource)","created_at":\#(Int(Date().timeIntervalSince1970))}"#
        _ = try await jetStream.publish("notifications.\(room).\(kind)", payload: Array(body.utf8))
    }
}
