import Foundation
@testable import Gateway
import NATS
import Notifications
import Testing
import TestSupport

/// Enrichment end to end: a real nats-server, worker, store and gateway.
/// Actors' profiles stay current on every read and reach open clients;
/// older profile news never wins; a deleted resource's notifications are
/// retracted; picture paths become CDN URLs.
@Suite("Enrichment", .serialized)
struct EnrichmentTests {
    /// A title from the actor's name, as the default templates make.
    struct Titles: NotificationTexts {
        func inApp(_ record: NotificationRecord) -> (title: String, body: String)? {
            ((record.username ?? record.triggerUser) + " liked your post", record.resourceTitle ?? "")
        }
    }

    static let enrichment = GatewayHarness.Enrichment(on: true, pictures: PictureURLs(base: "https://cdn.example.com/"), texts: Titles())
    static var now: Int { Int(Date().timeIntervalSince1970) }

    @Test(arguments: Backend.shared)
    func aRenameAfterAThousandNotificationsShowsOnEveryPageAndReachesOpenClients(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend, aggregateWindow: .seconds(3_600), enrichment: Self.enrichment) { (harness) async throws in
            let created = Self.now - 60
            // A thousand on SQLite; fewer on the DynamoDB emulator, which
            // the rest of the suite shares.
            let count = backend == .sqlite ? 1_000 : 60
            for index in 0..<count {
                try await harness.publish("post.like", #"{"owner":"bo","trigger_user":"ana","username":"Ana","user_picture":"/a/1.jpg","action":1,"resource_type":"POST","resource_id":"p\#(index)","created_at":\#(created)}"#)
            }
            // Two follows fold into one group with ana among its actors.
            try await harness.publish("user.follow", #"{"owner":"bo","trigger_user":"cy","username":"Cy","action":5,"resource_type":"USER","resource_id":"bo","created_at":\#(created)}"#)
            try await harness.publish("user.follow", #"{"owner":"bo","trigger_user":"ana","action":5,"resource_type":"USER","resource_id":"bo","created_at":\#(created)}"#)
            let token = harness.token("bo")
            #expect(try await eventually(timeout: .seconds(30)) {
                try await harness.get("/v1/notifications/unread_count", token: token).json["unread"] as? Int == count + 1
            })
            // Before: the name the events carried, the picture under the CDN.
            let first = try await harness.get("/v1/notifications?limit=1", token: token).json["items"] as? [[String: Any]]
            let group = try #require(first?.first)
            #expect(group["title"] as? String == "Ana liked your post")
            #expect((group["actors"] as? [[String: Any]])?.map { $0["username"] as? String } == ["Ana", "Cy"])
            #expect(group["user_picture"] as? String == "https://cdn.example.com/a/1.jpg")

            let socket = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            #expect(types(await socket.wait(for: 1)) == ["hello"])
            let renamed = ContinuousClock.now
            try await harness.publish("profile.updated", #"{"user":"ana","username":"Ana Bee","user_picture":"/a/2.jpg","updated_at":\#(Self.now)}"#)
            let frames = await socket.wait(for: 2, timeout: .seconds(5))
            #expect(ContinuousClock.now - renamed < .seconds(1), "the rename reaches an open client within a second")
            #expect(types(frames) == ["hello", "profile.updated"])
            #expect(frames.last?["user"] as? String == "ana")
            let profile = try #require(frames.last?["profile"] as? [String: Any])
            #expect(profile["username"] as? String == "Ana Bee")
            #expect(profile["user_picture"] as? String == "https://cdn.example.com/a/2.jpg")
            #expect(profile["user_bio"] == nil, "an update replaces the profile: no bio given, none shown")

            // Every page, every notification: the new name and picture, the title rendered again.
            var before: String?
            var seen = 0
            repeat {
                let page = try await harness.get("/v1/notifications?limit=100" + (before.map { "&before=" + $0 } ?? ""), token: token).json
                for item in page["items"] as? [[String: Any]] ?? [] {
                    seen += 1
                    #expect(item["username"] as? String == "Ana Bee")
                    #expect(item["user_picture"] as? String == "https://cdn.example.com/a/2.jpg")
                    #expect(item["title"] as? String == "Ana Bee liked your post")
                    let actors = (item["actors"] as? [[String: Any]] ?? []).map { $0["username"] as? String }
                    #expect(actors == (item["id"] as? String == group["id"] as? String ? ["Ana Bee", "Cy"] : ["Ana Bee"]))
                }
                before = page["next"] as? String
            } while before != nil
            #expect(seen == count + 1)
            let groupID = try #require(group["id"] as? String)
            let actors = try await harness.get("/v1/notifications/\(groupID)/actors", token: token).json["items"] as? [[String: Any]]
            #expect(actors?.map { $0["username"] as? String } == ["Ana Bee", "Cy"])

            // A resume replays with the new name too.
            let oldest = try #require((try await harness.get("/v1/notifications?limit=3", token: token).json["items"] as? [[String: Any]])?.last?["id"] as? String)
            let resumed = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)&since=\(oldest)")
            let replay = await resumed.wait(for: 3)
            #expect(types(replay) == ["hello", "notification.created", "notification.created"])
            #expect(replay.dropFirst().allSatisfy { ($0["notification"] as? [String: Any])?["username"] as? String == "Ana Bee" })

            // Account deletion blanks the actor everywhere.
            try await harness.publish("profile.updated", #"{"user":"ana","deleted":true,"updated_at":\#(Self.now + 1)}"#)
            #expect(try await eventually {
                let item = (try await harness.get("/v1/notifications?limit=2", token: token).json["items"] as? [[String: Any]])?.last
                return item?["username"] == nil && item?["user_picture"] == nil && item?["trigger_user"] as? String == "ana"
            })
        }
    }

    @Test func profileNewsOlderThanTheStoredProfileIsIgnoredAndEventsAreFilledFromIt() async throws {
        try await GatewayHarness.run(enrichment: Self.enrichment) { (harness) async throws in
            let token = harness.token("bo")
            let socket = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            #expect(types(await socket.wait(for: 1)) == ["hello"])
            let now = Self.now
            try await harness.publish("profile.updated", #"{"user":"ana","username":"Ana New","user_bio":"Now","updated_at":\#(now)}"#)
            // Older, in either form: ignored.
            try await harness.publish("profile.updated", #"{"user":"ana","username":"Ana Old","updated_at":\#(now - 100)}"#)
            try await harness.publish("post.like", #"{"owner":"bo","trigger_user":"ana","username":"Ana Older","user_bio":"Then","action":1,"resource_type":"POST","resource_id":"p1","created_at":\#(now - 50)}"#)
            // No actor fields: filled from the profile by the worker.
            try await harness.publish("post.like", #"{"owner":"bo","trigger_user":"ana","action":1,"resource_type":"POST","resource_id":"p2","created_at":\#(now)}"#)
            let frames = await socket.wait(for: 3)
            #expect(types(frames) == ["hello", "notification.created", "notification.created"], "only news a client shows is sent: none here")
            for frame in frames.dropFirst() {
                let record = try #require(frame["notification"] as? [String: Any])
                #expect(record["username"] as? String == "Ana New", "the live frame, as the worker stored it")
                #expect(record["user_bio"] as? String == "Now")
                #expect(record["title"] as? String == "Ana New liked your post")
            }
            let items = try #require(try await harness.get("/v1/notifications", token: token).json["items"] as? [[String: Any]])
            #expect(items.map { $0["username"] as? String } == ["Ana New", "Ana New"])

            // A newer event's actor fields update the profile; the fields it leaves out stay.
            try await harness.publish("post.like", #"{"owner":"bo","trigger_user":"ana","username":"Ana Newest","action":1,"resource_type":"POST","resource_id":"p3","created_at":\#(now + 10)}"#)
            let update = await socket.wait(for: 5)
            #expect(Set(types(Array(update.dropFirst(3)))) == ["profile.updated", "notification.created"])
            #expect(try await eventually {
                let items = try await harness.get("/v1/notifications", token: token).json["items"] as? [[String: Any]] ?? []
                return items.count == 3 && items.allSatisfy { $0["username"] as? String == "Ana Newest" && $0["user_bio"] as? String == "Now" }
            })
        }
    }

    @Test(arguments: Backend.shared)
    func aDeletedResourceRetractsItsNotificationsAndAnEditedOneShowsItsNewExcerpt(backend: Backend) async throws {
        try await GatewayHarness.run(backend: backend, aggregateWindow: .seconds(3_600), enrichment: Self.enrichment) { (harness) async throws in
            let token = harness.token("bo")
            let now = Self.now
            // On p1: three likes (one group), a reply; on p2: a like.
            for trigger in ["ana", "cy", "di"] {
                try await harness.publish("post.like", #"{"owner":"bo","trigger_user":"\#(trigger)","action":1,"resource_type":"POST","resource_id":"p1","excerpt":"First words","created_at":\#(now)}"#)
            }
            try await harness.publish("reply.post", #"{"owner":"bo","trigger_user":"ed","action":3,"resource_type":"POST","resource_id":"p1","created_at":\#(now)}"#)
            try await harness.publish("post.like", #"{"owner":"bo","trigger_user":"ana","action":1,"resource_type":"POST","resource_id":"p2","excerpt":"Second post","created_at":\#(now)}"#)
            // A room's notification about p1 goes too.
            try await harness.publish("global.post.like", #"{"trigger_user":"ana","action":1,"resource_type":"POST","resource_id":"p1","created_at":\#(now)}"#)
            #expect(try await eventually {
                (try await harness.get("/v1/notifications", token: token).json["items"] as? [[String: Any]])?.count == 3
            })
            #expect(try await eventually {
                (try await harness.get("/v1/rooms/global/notifications", token: token).json["items"] as? [[String: Any]])?.count == 1
            })
            let socket = TestWebSocket(port: harness.port, path: "/ws?access_token=\(token)")
            #expect(types(await socket.wait(for: 1)) == ["hello"])

            try await harness.publish("resource.updated", #"{"resource_type":"POST","resource_id":"p2","title":"Post two","excerpt":"Edited words","updated_at":\#(now)}"#)
            try await harness.publish("resource.deleted", #"{"resource_type":"POST","resource_id":"p1","updated_at":\#(now)}"#)
            let frames = await socket.wait(for: 3)
            #expect(types(frames) == ["hello", "notification.deleted", "notification.deleted"])
            let items = try #require(try await harness.get("/v1/notifications", token: token).json["items"] as? [[String: Any]])
            #expect(items.map { $0["resource_id"] as? String } == ["p2"])
            #expect(items.first?["excerpt"] as? String == "Edited words")
            #expect(items.first?["resource_title"] as? String == "Post two")
            #expect(try await harness.get("/v1/notifications/unread_count", token: token).json["unread"] as? Int == 1)
            #expect(try await eventually {
                (try await harness.get("/v1/rooms/global/notifications", token: token).json["items"] as? [[String: Any]])?.isEmpty == true
            })

            // Later events about the deleted post create nothing; an older edit does not bring it back.
            try await harness.publish("resource.updated", #"{"resource_type":"POST","resource_id":"p1","excerpt":"Back?","updated_at":\#(now - 5)}"#)
            try await harness.publish("post.like", #"{"owner":"bo","trigger_user":"fay","action":1,"resource_type":"POST","resource_id":"p1","created_at":\#(now)}"#)
            try await harness.publish("post.like", #"{"owner":"bo","trigger_user":"fay","action":1,"resource_type":"POST","resource_id":"p3","created_at":\#(now)}"#)
            #expect(try await eventually {
                (try await harness.get("/v1/notifications", token: token).json["items"] as? [[String: Any]])?.count == 2
            })
            let after = try #require(try await harness.get("/v1/notifications", token: token).json["items"] as? [[String: Any]])
            #expect(after.map { $0["resource_id"] as? String } == ["p3", "p2"])
            #expect(Set(createdIDs(await socket.wait(for: 4))).count == 1)
        }
    }

    @Test func picturePathsNeedACDNAndBecomeItsURLs() async throws {
        // Without CDN_BASE_URL a path breaks CONTRACT §1's rule.
        let plain = EventValidator(subjects: EventSubjects(prefix: "notifications"))
        let cdn = EventValidator(subjects: EventSubjects(prefix: "notifications"), pictures: PictureURLs(base: "https://cdn.example.com"), acceptsUpdates: true)
        func event(_ picture: String) -> [UInt8] {
            Array(#"{"owner":"bo","trigger_user":"ana","user_picture":"\#(picture)","action":1,"resource_type":"POST","resource_id":"p","created_at":\#(Self.now)}"#.utf8)
        }
        let now = Int64(Self.now)
        if case .failure(let rejection) = plain.validate(subject: "notifications.post.like", body: event("/a/1.jpg"), now: now) {
            #expect(rejection.reason == .invalidField)
            #expect(rejection.detail.contains("CDN_BASE_URL"))
        } else {
            Issue.record("a path without a CDN was accepted")
        }
        for bad in ["//evil.example/x.jpg", "a/1.jpg", "javascript:alert(1)", "/a b.jpg", "ftp://h/x.jpg"] {
            #expect((try? cdn.validate(subject: "notifications.post.like", body: event(bad), now: now).get()) == nil, "\(bad)")
        }
        let accepted = try cdn.validate(subject: "notifications.post.like", body: event("/a/1.jpg"), now: now).get()
        let absolute = try cdn.validate(subject: "notifications.post.like", body: event("https://img.example.org/1.jpg"), now: now).get()
        let record = NotificationRecord(event: accepted, id: "01", receivedAt: 0)
        #expect(PictureURLs(base: "https://cdn.example.com/").absolute(record).userPicture == "https://cdn.example.com/a/1.jpg")
        #expect(PictureURLs(base: "https://cdn.example.com").absolute(NotificationRecord(event: absolute, id: "02", receivedAt: 0)).userPicture == "https://img.example.org/1.jpg")

        // Updates: validated like events, unknown subjects with enrichment off.
        func update(_ subject: String, _ body: String) -> Result<InboundEvent, EventRejection> {
            cdn.validateInbound(subject: "notifications." + subject, body: Array(body.utf8), now: now)
        }
        #expect(plain.validateInbound(subject: "notifications.profile.updated", body: Array(#"{"user":"u","updated_at":1765318000}"#.utf8), now: now).rejection?.reason == .unknownSubject)
        #expect(update("profile.updated", #"{"username":"x","updated_at":1765318000}"#).rejection?.reason == .missingField)
        #expect(update("profile.updated", #"{"user":"a b","updated_at":1765318000}"#).rejection?.reason == .invalidField)
        #expect(update("profile.updated", #"{"user":"u","updated_at":12}"#).rejection?.reason == .invalidField)
        #expect(update("profile.updated", #"{"user":"u","deleted":"yes","updated_at":1765318000}"#).rejection?.reason == .invalidField)
        #expect(update("resource.deleted", #"{"resource_type":"POST","updated_at":1765318000}"#).rejection?.reason == .missingField)
        #expect(update("resource.updated", #"{"resource_type":"VIDEO","resource_id":"v","updated_at":1765318000}"#).rejection?.reason == .invalidField)
        #expect(update("resource.updated", #"{"resource_type":"POST","resource_id":"p","title":7,"updated_at":1765318000}"#).rejection?.reason == .invalidField)
        #expect(update("profile.updated", "[1]").rejection?.reason == .invalidJSON)
        let deleted = try update("profile.updated", #"{"user":"u","username":"Gone","deleted":true,"updated_at":1765318000}"#).get()
        #expect(deleted == .update(.profile(ProfileUpdate(user: "u", profile: ActorProfile(updatedAt: 1_765_318_000, deleted: true)))))
    }
}

extension Result {
    var rejection: Failure? {
        if case .failure(let failure) = self { return failure }
        return nil
    }
}

extension GatewayHarness {
    /// Publishes `body` on `notifications.<kind>` through JetStream.
    func publish(_ kind: String, _ body: String) async throws {
        _ = try await jetStream.publish("notifications." + kind, payload: Array(body.utf8))
    }
}
