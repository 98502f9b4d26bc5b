import KeyValueStore
@testable import Notifications
import Testing
import TestSupport

/// Aggregation (likes and follows on one resource fold into one
/// notification) and read retention, against every store.
@Suite("Aggregation and read retention")
struct AggregationTests {
    typealias R = RepositoryTests

    static func withRepository(
        _ backend: Backend, clock: ManualClock = ManualClock(1_765_318_000), window: Duration? = .seconds(3_600),
        readRetention: Duration? = nil, _ body: (NotificationRepository, any KeyValueStore) async throws -> Void
    ) async throws {
        try await backend.withStore(clock: clock) { store in
            let repository = NotificationRepository(
                store: store, retention: .seconds(90 * R.day), readRetention: readRetention, aggregateWindow: window,
                clockMilliseconds: { clock.now * 1000 })
            try await body(repository, store)
        }
    }

    static func like(_ trigger: String, resource: String = "p1", kind: String = "post.like") -> IncomingEvent {
        R.event(kind, trigger: trigger, resource: resource, eventID: "\(kind)-\(trigger)-\(resource)-\(Int.random(in: 0..<1_000_000_000))")
    }

    static func only(_ repository: NotificationRepository) async throws -> NotificationRecord {
        let feed = try await repository.feed(owner: "ana", limit: 10)
        try #require(feed.items.count == 1)
        return feed.items[0]
    }

    static func allActors(_ repository: NotificationRepository, of id: String, pageSize: Int) async throws -> [String] {
        var actors: [String] = []
        var cursor: String?
        repeat {
            let page = try #require(try await repository.actors(owner: "ana", notification: id, limit: pageSize, before: cursor))
            actors += page.items.map(\.triggerUser)
            cursor = page.next
        } while cursor != nil
        return actors
    }

    static func body(_ message: OutboundMessage) -> String { String(decoding: message.body, as: UTF8.self) }

    @Test(arguments: Backend.allCases)
    func likesOnOneResourceFoldIntoOneNotificationThatMovesUpUnread(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository, _ in
            let first = try await repository.apply([Self.like("ben")])
            let groupID = try #require(R.created(first.outcomes[0]))
            let reply = try #require(R.created(try await repository.apply([R.event("reply.post", trigger: "zed", resource: "p9")]).outcomes[0]))
            #expect(try await repository.markRead(owner: "ana", ids: [groupID]) == [groupID])
            #expect(try await repository.unreadCount(owner: "ana") == 1)

            let second = try await repository.apply([Self.like("cy")])
            guard case .aggregated(let id, let replaces) = second.outcomes[0] else {
                Issue.record("expected a fold, got \(second.outcomes)")
                return
            }
            #expect(replaces == groupID)
            #expect(id > reply)
            let message = Self.body(try #require(second.outbox?.messages.first))
            #expect(message.hasPrefix(#"{"type":"notification.updated","notification":{"id":"\#(id)""#))
            #expect(message.hasSuffix(#","replaces":"\#(groupID)"}"#))
            // Two more in one batch: "dee and 3 others".
            let third = try await repository.apply([Self.like("dee"), Self.like("eve")])
            #expect(third.outcomes.allSatisfy { if case .aggregated = $0 { true } else { false } })

            let feed = try await repository.feed(owner: "ana", limit: 10)
            #expect(feed.items.count == 2)
            let group = feed.items[0]
            #expect(feed.items[1].id == reply)
            #expect(group.read == false)
            #expect(group.triggerUser == "eve")
            #expect(group.group?.id == groupID)
            #expect(group.group?.actorCount == 4)
            #expect(group.group?.actors.map(\.triggerUser) == ["eve", "dee", "cy"])
            #expect(group.actionKey == "1#POST#p1#eve")
            #expect(String(decoding: group.json, as: UTF8.self).contains(#""group_id":"\#(groupID)","actor_count":4,"actors":[{"trigger_user":"eve""#))
            // The group was read, is unread again; the reply is unread.
            #expect(try await repository.unreadCount(owner: "ana") == 2)
            // Replies and other resources do not fold.
            let other = try await repository.apply([Self.like("ben", resource: "p2"), R.event("reply.post", trigger: "cy", resource: "p1")])
            #expect(other.outcomes.allSatisfy { R.created($0) != nil })
        }
    }

    @Test(arguments: Backend.allCases)
    func everyActorIsKeptNewestFirstAndPaged(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository, _ in
            let names = (0..<11).map { "u\($0)" }
            for name in names.prefix(6) { _ = try await repository.apply([Self.like(name)]) }
            _ = try await repository.apply(names.dropFirst(6).map { Self.like($0) })
            let group = try await Self.only(repository)
            #expect(group.group?.actorCount == 11)
            for size in [1, 3, 4, 11, 100] {
                #expect(try await Self.allActors(repository, of: group.id, pageSize: size) == names.reversed())
            }
            let page = try #require(try await repository.actors(owner: "ana", notification: group.id, limit: 11))
            #expect(page.next == nil)
            #expect(page.count == 11)
            #expect(try await repository.actors(owner: "ana", notification: "01ARZ3NDEKTSV4RRFFQ69G5FAV", limit: 5) == nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func anUnlikeTakesOneActorOutAndTheLastOneTakesTheGroup(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository, store in
            for name in ["u1", "u2", "u3", "u4", "u5", "u6"] { _ = try await repository.apply([Self.like(name)]) }
            let group = try await Self.only(repository)
            #expect(group.group?.actors.map(\.triggerUser) == ["u6", "u5", "u4"])

            // A shown actor leaves: the next newest stored one is shown.
            let unlike = try await repository.apply([Self.like("u6", kind: "post.unlike")])
            #expect(unlike.outcomes == [.actorRemoved(id: group.id)])
            let message = Self.body(try #require(unlike.outbox?.messages.first))
            #expect(message.hasPrefix(#"{"type":"notification.updated","notification":{"id":"\#(group.id)""#))
            #expect(!message.contains("replaces"))
            var now = try await Self.only(repository)
            #expect(now.id == group.id)
            #expect(now.triggerUser == "u5")
            #expect(now.group?.actorCount == 5)
            #expect(now.group?.actors.map(\.triggerUser) == ["u5", "u4", "u3"])

            // A stored actor leaves, and two shown ones in one batch.
            _ = try await repository.apply([Self.like("u2", kind: "post.unlike")])
            _ = try await repository.apply([Self.like("u5", kind: "post.unlike"), Self.like("u4", kind: "post.unlike")])
            now = try await Self.only(repository)
            #expect(now.group?.actors.map(\.triggerUser) == ["u3", "u1"])
            #expect(try await Self.allActors(repository, of: now.id, pageSize: 1) == ["u3", "u1"])
            #expect(try await repository.unreadCount(owner: "ana") == 1)

            let last = try await repository.apply([Self.like("u3", kind: "post.unlike"), Self.like("u1", kind: "post.unlike")])
            #expect(last.outcomes == [.actorRemoved(id: group.id), .retracted(id: group.id)])
            #expect(Self.body(try #require(last.outbox?.messages.last)) == #"{"type":"notification.deleted","id":"\#(group.id)"}"#)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.isEmpty)
            #expect(try await repository.unreadCount(owner: "ana") == 0)
            // Nothing of the group is left but tombstones, markers and the counter.
            let left = try await store.query(Query(partition: "U#ana")).items.map(\.key.sort)
            #expect(left.filter { !$0.hasPrefix("A#") && !$0.hasPrefix("I#") } == ["C"])
            // A new like starts a new group.
            #expect(R.created(try await repository.apply([Self.like("u7")]).outcomes[0]) != nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func deduplicationAndRetractionHoldPerActor(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository, _ in
            _ = try await repository.apply([Self.like("ben"), Self.like("cy")])
            #expect(try await repository.apply([Self.like("ben")]).outcomes == [.duplicate])
            #expect(try await repository.apply([Self.like("dee", kind: "post.unlike")]).outcomes == [.nothingToRetract])
            // Ben leaves and comes back: he is the newest again.
            let again = try await repository.apply([Self.like("ben", kind: "post.unlike"), Self.like("ben")])
            guard case .actorRemoved = again.outcomes[0], case .aggregated = again.outcomes[1] else {
                Issue.record("got \(again.outcomes)")
                return
            }
            let group = try await Self.only(repository)
            #expect(group.group?.actors.map(\.triggerUser) == ["ben", "cy"])
            // A repeated event id has no effect.
            let event = Self.like("eve")
            _ = try await repository.apply([event])
            #expect(try await repository.apply([event]).outcomes == [.alreadyProcessed])
            #expect(try await Self.only(repository).group?.actorCount == 3)
            // Follows fold too.
            _ = try await repository.apply([Self.like("ben", resource: "ana", kind: "user.follow")])
            let follows = try await repository.apply([Self.like("cy", resource: "ana", kind: "user.follow")])
            guard case .aggregated = follows.outcomes[0] else {
                Issue.record("got \(follows.outcomes)")
                return
            }
        }
    }

    @Test(arguments: Backend.allCases)
    func aClosedWindowStartsANewGroupAndTheOldOneStillLosesActors(backend: Backend) async throws {
        let clock = ManualClock(1_765_318_000)
        try await Self.withRepository(backend, clock: clock) { repository, _ in
            _ = try await repository.apply([Self.like("ben"), Self.like("cy")])
            let old = try await Self.only(repository)
            clock.advance(by: 3_601)
            let fresh = try await repository.apply([Self.like("dee")])
            let freshID = try #require(R.created(fresh.outcomes[0]))
            #expect(try await repository.apply([Self.like("cy", kind: "post.unlike")]).outcomes == [.actorRemoved(id: old.id)])
            let feed = try await repository.feed(owner: "ana", limit: 10).items
            #expect(feed.map(\.id) == [freshID, old.id])
            #expect(feed[1].group?.actors.map(\.triggerUser) == ["ben"])
            #expect(feed[0].group?.actorCount == 1)
        }
    }

    @Test(arguments: Backend.allCases)
    func withoutAWindowEveryLikeIsItsOwnNotification(backend: Backend) async throws {
        try await Self.withRepository(backend, window: nil) { repository, _ in
            let result = try await repository.apply([Self.like("ben"), Self.like("cy")])
            #expect(result.outcomes.allSatisfy { R.created($0) != nil })
            let feed = try await repository.feed(owner: "ana", limit: 10).items
            #expect(feed.count == 2)
            #expect(feed.allSatisfy { $0.group == nil })
        }
    }

    @Test(arguments: Backend.allCases)
    func aRepublishedOutboxCarriesTheGroupAsItIsNow(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository, _ in
            let first = try await repository.apply([Self.like("ben")])
            let fold = try await repository.apply([Self.like("cy")])
            let refold = try await repository.apply([Self.like("dee")])
            let pending = try await repository.pendingOutboxes()
            #expect(pending.map(\.id) == [first, fold, refold].compactMap { $0.outbox?.id })
            let bodies = pending.map { $0.messages.map(Self.body) }
            let group = try await Self.only(repository)
            // The first notification is gone: its created message is left
            // out; the first fold's became a delete of the id it replaced.
            #expect(bodies[0].isEmpty)
            #expect(bodies[1].count == 1)
            if case .aggregated(let id, let replaces) = fold.outcomes[0] {
                #expect(bodies[1][0] == #"{"type":"notification.deleted","id":"\#(replaces)"}"#)
                #expect(bodies[2][0].hasSuffix(#""replaces":"\#(id)"}"#))
            }
            #expect(bodies[2][0].contains(#"{"id":"\#(group.id)""#))
        }
    }

    // MARK: Read retention

    @Test(arguments: Backend.allCases)
    func aReadNotificationExpiresAfterTheReadRetentionWithItsPointer(backend: Backend) async throws {
        let clock = ManualClock(1_765_318_000)
        try await Self.withRepository(backend, clock: clock, window: nil, readRetention: .seconds(R.day)) { repository, store in
            let ids = try await repository.apply([Self.like("ben"), Self.like("cy"), Self.like("dee")]).outcomes.compactMap(R.created)
            #expect(try await repository.markRead(owner: "ana", ids: [ids[0], ids[1]]) == [ids[0], ids[1]])
            let pointer = try #require(try await store.getItem(ItemKey(partition: "U#ana", sort: "A#1#POST#p1#ben")))
            #expect(pointer["expires_at"]?.integerValue == clock.now + R.day)
            clock.advance(by: R.day + 1)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.map(\.id) == [ids[2]])
            #expect(try await repository.removeExpired() == 4)
            #expect(try await repository.unreadCount(owner: "ana") == 1)
            // The action key is free: a new like notifies, and its unlike
            // finds it (no pointer left behind to a deleted notification).
            let again = try #require(R.created(try await repository.apply([Self.like("ben")]).outcomes[0]))
            #expect(try await repository.apply([Self.like("ben", kind: "post.unlike")]).outcomes == [.retracted(id: again)])
            // Unread ones keep the full retention.
            clock.advance(by: 80 * R.day)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.map(\.id) == [ids[2]])
        }
    }

    @Test(arguments: Backend.allCases)
    func aReadGroupExpiresAfterTheReadRetentionAndItsActorsCanLikeAgain(backend: Backend) async throws {
        let clock = ManualClock(1_765_318_000)
        try await Self.withRepository(backend, clock: clock, readRetention: .seconds(R.day)) { repository, _ in
            _ = try await repository.apply([Self.like("ben"), Self.like("cy")])
            let group = try await Self.only(repository)
            #expect(try await repository.markAllRead(owner: "ana") == [group.id])
            clock.advance(by: R.day + 1)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.isEmpty)
            let again = try await repository.apply([Self.like("ben")])
            #expect(R.created(again.outcomes[0]) != nil)
            #expect(try await Self.only(repository).group?.actorCount == 1)
        }
    }

    /// A room's likes fold like a user's, in the room's own partition, and
    /// its messages go to the room's subject.
    @Test(arguments: Backend.allCases)
    func aRoomsLikesFoldInTheRoomAndGoToItsSubject(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository, _ in
            func roomLike(_ trigger: String) throws -> IncomingEvent {
                let body = EventValidatorTests.body(["trigger_user": EventValidatorTests.s(trigger), "event_id": EventValidatorTests.q("room-\(trigger)")], dropping: ["owner"])
                let event = try EventValidatorTests.validator.validate(
                    subject: "notifications.channel.live1.post.like", body: body, now: EventValidatorTests.now).get()
                return IncomingEvent(event: event, idempotencyKey: event.eventID.map { "e:" + $0 })
            }
            let first = try await repository.apply([try roomLike("ben")])
            #expect(first.outbox?.messages.map(\.subject) == ["rooms.channel.live1.notifications"])
            let created = Self.body(try #require(first.outbox?.messages.first))
            #expect(created.hasPrefix(#"{"type":"notification.created","room":"channel:live1","notification":{"id":"#))
            let second = try await repository.apply([try roomLike("cy")])
            guard case .aggregated = second.outcomes[0] else {
                Issue.record("expected a fold, got \(second.outcomes)")
                return
            }
            #expect(Self.body(try #require(second.outbox?.messages.first)).hasPrefix(#"{"type":"notification.updated","room":"channel:live1","#))
            let room = try #require(Room("channel:live1"))
            let feed = try await repository.feed(owner: room.owner, limit: 10)
            #expect(feed.items.count == 1)
            #expect(feed.items.first?.group?.actorCount == 2)
            #expect(feed.items.first?.room == room)
            #expect(String(decoding: try #require(feed.items.first).json, as: UTF8.self).contains(#""owner":"channel:live1","room":"channel:live1""#))
            #expect(try await repository.feed(owner: "ana", limit: 10).items.isEmpty, "nothing in a user's feed")
        }
    }
}
