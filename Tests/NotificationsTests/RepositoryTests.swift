import KeyValueStore
@testable import Notifications
import SQLiteStore
import Testing
import TestSupport

/// CONTRACT §2 at the repository level, against every store.
@Suite("Notification repository")
struct RepositoryTests {
    static func event(
        _ kind: String = "post.like", owner: String = "ana", trigger: String = "ben", resource: String = "p1", eventID: String? = nil,
        createdAt: Int64 = EventValidatorTests.now
    ) -> IncomingEvent {
        let kind = EventKind.named(kind)!
        var fields: [String: String?] = [
            "owner": EventValidatorTests.s(owner), "trigger_user": EventValidatorTests.s(trigger),
            "action": String(kind.action), "resource_type": EventValidatorTests.s(kind.resourceType),
            "resource_id": EventValidatorTests.s(resource), "created_at": String(createdAt),
        ]
        fields["event_id"] = eventID.map(EventValidatorTests.q) ?? .some(nil)
        let body = EventValidatorTests.body(fields)
        let event = try! EventValidatorTests.validator.validate(subject: "notifications." + kind.name, body: body, now: EventValidatorTests.now).get()
        return IncomingEvent(event: event, idempotencyKey: eventID.map { "e:" + $0 })
    }

    static func withRepository(_ backend: Backend, clock: ManualClock = ManualClock(1_765_318_000), _ body: (NotificationRepository) async throws -> Void) async throws {
        try await backend.withStore(clock: clock) { store in
            let repository = NotificationRepository(store: store, clockMilliseconds: { clock.now * 1000 })
            try await body(repository)
        }
    }

    static func created(_ outcome: EventOutcome) -> String? {
        if case .created(let id) = outcome { return id }
        return nil
    }

    @Test(arguments: Backend.allCases)
    func aLikeCreatesOneNotificationAndOneMessage(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let result = try await repository.apply([Self.event(eventID: "e1")])
            let id = try #require(Self.created(result.outcomes[0]))
            let outbox = try #require(result.outbox)
            #expect(outbox.messages.count == 1)
            #expect(outbox.messages[0].subject == "users.ana.notifications")
            #expect(String(decoding: outbox.messages[0].body, as: UTF8.self).contains(#""id":"\#(id)""#))
            let feed = try await repository.feed(owner: "ana", limit: 10)
            #expect(feed.items.map(\.id) == [id])
            #expect(feed.items[0].read == false)
            #expect(feed.next == nil)
            #expect(try await repository.unreadCount(owner: "ana") == 1)
            #expect(try await repository.pendingOutboxes().map(\.id) == [outbox.id])
        }
    }

    @Test(arguments: Backend.allCases)
    func likingTwiceNotifiesOnce(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let first = try await repository.apply([Self.event(eventID: "e1")])
            let second = try await repository.apply([Self.event(eventID: "e2")])
            #expect(Self.created(first.outcomes[0]) != nil)
            #expect(second.outcomes == [.duplicate])
            #expect(second.outbox == nil)
            let inOneBatch = try await repository.apply([Self.event(resource: "p2"), Self.event(resource: "p2")])
            #expect(Self.created(inOneBatch.outcomes[0]) != nil)
            #expect(inOneBatch.outcomes[1] == .duplicate)
            #expect(inOneBatch.outbox?.messages.count == 1)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.count == 2)
            #expect(try await repository.unreadCount(owner: "ana") == 2)
        }
    }

    @Test(arguments: Backend.allCases)
    func unlikeThenLikeMakesANewNotification(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let like = try #require(Self.created(try await repository.apply([Self.event()]).outcomes[0]))
            let unlike = try await repository.apply([Self.event("post.unlike")])
            #expect(unlike.outcomes == [.retracted(id: like)])
            let deleted = try #require(unlike.outbox?.messages.first)
            #expect(String(decoding: deleted.body, as: UTF8.self) == #"{"type":"notification.deleted","id":"\#(like)"}"#)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.isEmpty)
            #expect(try await repository.unreadCount(owner: "ana") == 0)
            let again = try #require(Self.created(try await repository.apply([Self.event()]).outcomes[0]))
            #expect(again != like)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.map(\.id) == [again])
            #expect(try await repository.unreadCount(owner: "ana") == 1)
        }
    }

    @Test(arguments: Backend.allCases)
    func unlikingNothingDoesNothing(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let result = try await repository.apply([Self.event("post.unlike"), Self.event("user.unfollow")])
            #expect(result.outcomes == [.nothingToRetract, .nothingToRetract])
            #expect(result.outbox == nil)
            #expect(try await repository.unreadCount(owner: "ana") == 0)
            // A retraction only matches its own action key.
            _ = try await repository.apply([Self.event("comment.like")])
            #expect(try await repository.apply([Self.event("post.unlike")]).outcomes == [.nothingToRetract])
            #expect(try await repository.apply([Self.event("post.unlike", trigger: "cy")]).outcomes == [.nothingToRetract])
        }
    }

    @Test(arguments: Backend.allCases)
    func aRepeatedEventIDHasNoEffectEvenAfterRetraction(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let first = try await repository.apply([Self.event(eventID: "same")])
            let id = try #require(Self.created(first.outcomes[0]))
            #expect(try await repository.apply([Self.event(eventID: "same")]).outcomes == [.alreadyProcessed])
            #expect(try await repository.apply([Self.event("post.unlike", eventID: "u1")]).outcomes == [.retracted(id: id)])
            let replay = try await repository.apply([Self.event(eventID: "same")])
            #expect(replay.outcomes == [.alreadyProcessed])
            #expect(replay.outbox == nil)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.isEmpty)
            // The same event id for another owner is another event.
            #expect(Self.created(try await repository.apply([Self.event(owner: "cy", eventID: "same")]).outcomes[0]) != nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func aRedeliveredMessageWithoutEventIDIsRecognisedByItsDeliveryKey(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let like = Self.event()
            let delivery = IncomingEvent(event: like.event, idempotencyKey: IncomingEvent.key(for: like.event, streamCreated: 7, sequence: 41))
            let id = try #require(Self.created(try await repository.apply([delivery]).outcomes[0]))
            _ = try await repository.apply([Self.event("post.unlike")])
            // Without the marker this would create a second notification.
            #expect(try await repository.apply([delivery]).outcomes == [.alreadyProcessed])
            let recreatedStream = IncomingEvent(event: like.event, idempotencyKey: IncomingEvent.key(for: like.event, streamCreated: 8, sequence: 41))
            let other = try #require(Self.created(try await repository.apply([recreatedStream]).outcomes[0]))
            #expect(other != id)
        }
    }

    @Test(arguments: Backend.allCases)
    func likeUnlikeLikeInOneBatchAppliesInOrder(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let result = try await repository.apply([Self.event(), Self.event("post.unlike"), Self.event(), Self.event("post.unlike", resource: "none")])
            let first = try #require(Self.created(result.outcomes[0]))
            #expect(result.outcomes[1] == .retracted(id: first))
            let second = try #require(Self.created(result.outcomes[2]))
            #expect(result.outcomes[3] == .nothingToRetract)
            let bodies = try #require(result.outbox).messages.map { String(decoding: $0.body, as: UTF8.self) }
            #expect(bodies.count == 3)
            #expect(bodies[0].contains(#""type":"notification.created""#) && bodies[0].contains(first))
            #expect(bodies[1] == #"{"type":"notification.deleted","id":"\#(first)"}"#)
            #expect(bodies[2].contains(second))
            #expect(try await repository.feed(owner: "ana", limit: 10).items.map(\.id) == [second])
            #expect(try await repository.unreadCount(owner: "ana") == 1)
        }
    }

    @Test(arguments: Backend.allCases)
    func retractingAReadNotificationLeavesTheUnreadCountAlone(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let id = try #require(Self.created(try await repository.apply([Self.event()]).outcomes[0]))
            _ = try await repository.apply([Self.event(resource: "p2")])
            // Mark the first read the way the gateway does: item and counter together.
            try await repository.store.transactWriteItems([
                .update(NotificationRepository.notificationKey("ana", id), Update(set: ["read": true]), condition: .equals("read", false)),
                .update(NotificationRepository.counterKey("ana"), Update(add: ["unread": -1])),
            ])
            #expect(try await repository.unreadCount(owner: "ana") == 1)
            #expect(try await repository.apply([Self.event("post.unlike")]).outcomes == [.retracted(id: id)])
            #expect(try await repository.unreadCount(owner: "ana") == 1)
        }
    }

    @Test(arguments: Backend.allCases)
    func selfNotificationsStoreNothing(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let result = try await repository.apply([Self.event(owner: "ana", trigger: "ana")])
            #expect(result.outcomes == [.selfNotification])
            #expect(result.outbox == nil)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.isEmpty)
        }
    }

    @Test(arguments: Backend.allCases)
    func theFeedPagesNewestFirstAndSaysWhenNoOlderItemsExist(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            var ids: [String] = []
            for index in 0..<7 {
                ids.append(try #require(Self.created(try await repository.apply([Self.event(resource: "p\(index)")]).outcomes[0])))
            }
            _ = try await repository.apply([Self.event(owner: "other", resource: "x")])
            var seen: [String] = []
            var before: String?
            var pages = 0
            repeat {
                let page = try await repository.feed(owner: "ana", limit: 3, before: before)
                seen += page.items.map(\.id)
                before = page.next
                pages += 1
            } while before != nil && pages < 10
            #expect(seen == ids.reversed())
            #expect(pages == 3)
            let exact = try await repository.feed(owner: "ana", limit: 7)
            #expect(exact.items.count == 7)
            #expect(exact.next == nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func outboxesAreListedOldestFirstAndForgotten(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let first = try #require(try await repository.apply([Self.event(resource: "a")]).outbox)
            let second = try #require(try await repository.apply([Self.event(resource: "b"), Self.event(owner: "cy", resource: "b")]).outbox)
            let pending = try await repository.pendingOutboxes()
            #expect(pending == [first, second])
            #expect(pending[1].messages.map(\.subject) == ["users.ana.notifications", "users.cy.notifications"])
            try await repository.deleteOutboxes([first.id])
            #expect(try await repository.pendingOutboxes() == [second])
        }
    }

    @Test(arguments: Backend.allCases)
    func idempotencyMarkersExpireAfterTheirRetention(backend: Backend) async throws {
        let clock = ManualClock(1_765_318_000)
        try await Self.withRepository(backend, clock: clock) { repository in
            _ = try await repository.apply([Self.event(eventID: "e1")])
            _ = try await repository.apply([Self.event("post.unlike")])
            clock.advance(by: 7 * 86_400)
            #expect(try await repository.apply([Self.event(eventID: "e1")]).outcomes == [.alreadyProcessed])
            clock.advance(by: 2 * 86_400)
            #expect(Self.created(try await repository.apply([Self.event(eventID: "e1")]).outcomes[0]) != nil)
        }
    }

    /// `event` at `sequence` of the stream.
    static func at(_ sequence: UInt64, _ event: IncomingEvent) -> IncomingEvent {
        IncomingEvent(event: event.event, idempotencyKey: "s:1:\(sequence)", order: EventOrder(stream: 1, sequence: sequence))
    }

    /// A follow redelivered after its unfollow (its first worker died
    /// holding it) stays retracted: the stream order decides, not the
    /// delivery order.
    @Test(arguments: Backend.allCases)
    func aCreateDeliveredAfterItsLaterRetractionStaysRetracted(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let unfollow = try await repository.apply([Self.at(2, Self.event("user.unfollow", resource: "ana"))])
            #expect(unfollow.outcomes == [.nothingToRetract])
            let follow = try await repository.apply([Self.at(1, Self.event("user.follow", resource: "ana"))])
            #expect(follow.outcomes == [.superseded])
            #expect(follow.outbox == nil)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.isEmpty)
            #expect(try await repository.unreadCount(owner: "ana") == 0)
            // A follow later in the stream notifies again.
            let again = try await repository.apply([Self.at(3, Self.event("user.follow", resource: "ana"))])
            #expect(Self.created(again.outcomes[0]) != nil)
        }
    }

    /// like (1), unlike (3), like (5) in the stream, delivered 1, 5, 3: the
    /// late unlike is older than the like that found the notification live,
    /// so the notification stays.
    @Test(arguments: Backend.allCases)
    func aLateRetractionOlderThanTheLastCreateChangesNothing(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let like = try #require(Self.created(try await repository.apply([Self.at(1, Self.event())]).outcomes[0]))
            #expect(try await repository.apply([Self.at(5, Self.event())]).outcomes == [.duplicate])
            #expect(try await repository.apply([Self.at(3, Self.event("post.unlike"))]).outcomes == [.superseded])
            #expect(try await repository.feed(owner: "ana", limit: 10).items.map(\.id) == [like])
            // In one batch, out of order, the same holds.
            let batch = try await repository.apply([
                Self.at(9, Self.event("post.unlike", resource: "p2")), Self.at(8, Self.event(resource: "p2")),
            ])
            #expect(batch.outcomes == [.nothingToRetract, .superseded])
            #expect(try await repository.feed(owner: "ana", limit: 10).items.map(\.id) == [like])
        }
    }

    /// The feed is in the order the worker stored events, not `created_at`
    /// order: an event a year old, arriving last, is the newest.
    @Test(arguments: Backend.allCases)
    func theFeedFollowsArrivalOrderNotCreatedAt(backend: Backend) async throws {
        let clock = ManualClock(EventValidatorTests.now)
        try await Self.withRepository(backend, clock: clock) { repository in
            let first = try #require(Self.created(try await repository.apply([Self.event(resource: "p1")]).outcomes[0]))
            clock.advance(by: 1)
            let yearOld = Self.event(resource: "p2", createdAt: EventValidatorTests.now - 365 * Self.day)
            let second = try #require(Self.created(try await repository.apply([yearOld]).outcomes[0]))
            let feed = try await repository.feed(owner: "ana", limit: 10).items
            #expect(feed.map(\.id) == [second, first])
            #expect(feed[0].createdAt == EventValidatorTests.now - 365 * Self.day)
            #expect(try await repository.notifications(owner: "ana", after: first, limit: 10).map(\.id) == [second])
        }
    }

    /// A full disk can take the health probe's one page while batches
    /// fail: the probe reports the last batch's store fault until a batch
    /// commits again.
    @Test func theWriteProbeFailsWhileBatchesFailForTheStore() async throws {
        let outage = Flag(true)
        try await Backend.inMemory.withStore { base in
            let store = FaultInjectingStore(base: base, poisonedPartition: "U#ana", code: .unavailable, isFailing: { outage.value })
            let repository = NotificationRepository(store: store)
            try await repository.probeWrite()
            await #expect(throws: KeyValueStoreError.self) { _ = try await repository.apply([Self.event()]) }
            await #expect(throws: KeyValueStoreError.self) { try await repository.probeWrite() }
            outage.value = false
            _ = try await repository.apply([Self.event()])
            try await repository.probeWrite()
        }
    }

    // MARK: Retention

    static let day: Int64 = 86_400

    @Test(arguments: Backend.allCases)
    func notificationsExpireAfterTheRetentionAndTheCounterFollows(backend: Backend) async throws {
        let clock = ManualClock(1_765_318_000)
        try await backend.withStore(clock: clock) { store in
            let repository = NotificationRepository(store: store, retention: .seconds(10 * Self.day), clockMilliseconds: { clock.now * 1000 })
            let old = try await repository.apply((1...3).map { Self.event(resource: "p\($0)") }).outcomes.compactMap(Self.created)
            #expect(try await repository.markRead(owner: "ana", ids: [old[1]]) == [old[1]])
            clock.advance(by: 9 * Self.day)
            let recent = try #require(Self.created(try await repository.apply([Self.event(resource: "p4")]).outcomes[0]))
            #expect(try await repository.removeExpired() == 0)
            #expect(try await repository.unreadCount(owner: "ana") == 3)

            clock.advance(by: 2 * Self.day)  // p1–p3 are 11 days old, p4 2 days
            #expect(try await repository.feed(owner: "ana", limit: 10).items.map(\.id) == [recent])
            // Three notifications and their three action-key items; two were unread.
            #expect(try await repository.removeExpired() == 6)
            #expect(try await repository.removeExpired() == 0)
            #expect(try await repository.unreadCount(owner: "ana") == 1)
            let left = try await store.query(Query(partition: "U#ana")).items.map(\.key.sort)
            #expect(left.filter { $0.hasPrefix("A#") }.count == 1)
            #expect(left.filter { !$0.hasPrefix("A#") } == ["C", "N#" + recent])
            // The action key is free again: liking p1 now notifies anew.
            let again = try await repository.apply([Self.event(resource: "p1")])
            #expect(Self.created(again.outcomes[0]) != nil)
            #expect(try await repository.unreadCount(owner: "ana") == 2)
        }
    }

    @Test(arguments: Backend.allCases)
    func withoutRetentionNotificationsStay(backend: Backend) async throws {
        let clock = ManualClock(1_765_318_000)
        try await backend.withStore(clock: clock) { store in
            let repository = NotificationRepository(store: store, retention: nil, clockMilliseconds: { clock.now * 1000 })
            _ = try await repository.apply([Self.event()])
            clock.advance(by: 3_650 * Self.day)
            #expect(try await repository.removeExpired() == 0)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.count == 1)
            #expect(try await repository.unreadCount(owner: "ana") == 1)
        }
    }

    /// Two processes sweeping one SQLite file at once lower each counter
    /// once per expired unread notification.
    @Test func concurrentSweepsLowerTheCounterOnce() async throws {
        let clock = ManualClock(1_765_318_000)
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let databases = [try await SQLiteDatabase.open(.init(path: path)), try await SQLiteDatabase.open(.init(path: path))]
            var repositories: [NotificationRepository] = []
            for database in databases {
                let store = try await SQLiteKeyValueStore(database: database, tableName: "notifications", clock: clock.storeClock)
                repositories.append(NotificationRepository(store: store, retention: .seconds(Self.day), clockMilliseconds: { clock.now * 1000 }))
            }
            for round in 0..<20 {
                _ = try await repositories[0].apply((0..<10).map { Self.event(owner: "o\($0)", resource: "old\(round)") })
            }
            clock.advance(by: Self.day / 2)
            _ = try await repositories[0].apply((0..<10).map { Self.event(owner: "o\($0)", resource: "new") })
            clock.advance(by: Self.day / 2)  // the first 200 expired, the last 10 not
            let removed = try await withThrowingTaskGroup(of: Int.self) { group in
                for repository in repositories {
                    group.addTask {
                        var total = 0
                        while true {
                            let removed = try await repository.removeExpired(limit: 30)
                            if removed == 0 { return total }
                            total += removed
                        }
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(removed == 400)
            for owner in 0..<10 {
                #expect(try await repositories[1].unreadCount(owner: "o\(owner)") == 1)
                #expect(try await repositories[0].feed(owner: "o\(owner)", limit: 100).items.count == 1)
            }
            for database in databases { await database.close() }
        }
    }

    /// Under steady load with a short retention, the sweep frees as many
    /// pages as new notifications take: the file stops growing.
    @Test func theDatabaseStopsGrowingUnderSteadyLoad() async throws {
        let clock = ManualClock(1_765_318_000)
        try await withTemporaryDirectory { directory in
            let database = try await SQLiteDatabase.open(.init(path: directory.file("store.sqlite")))
            let store = try await SQLiteKeyValueStore(database: database, tableName: "notifications", clock: clock.storeClock)
            let repository = NotificationRepository(
                store: store, idempotencyRetention: .seconds(3_600), retention: .seconds(3_600), clockMilliseconds: { clock.now * 1000 })
            var sizes: [Int64] = []
            var published: [String] = []
            for minute in 0..<300 {
                // 100 events a minute from 50 owners, each with an event id;
                // outboxes deleted with the next batch, as the worker does.
                let batch = (0..<100).map { Self.event(owner: "o\($0 % 50)", resource: "r\(minute)-\($0)", eventID: "m\(minute)-\($0)") }
                let result = try await repository.apply(batch, publishedOutboxes: published)
                #expect(result.outcomes.compactMap(Self.created).count == 100)
                published = result.outbox.map { [$0.id] } ?? []
                clock.advance(by: 60)
                _ = try await repository.removeExpired(limit: 10_000)
                if minute % 60 == 59 { sizes.append(try await database.pageCounts().total) }
            }
            // Live: the last 59 minutes' (an hour ago expired at this second), 2 a minute per owner.
            #expect(try await repository.feed(owner: "o0", limit: 200).items.count == 118)
            #expect(try await repository.unreadCount(owner: "o0") == 118)
            // Freed pages fill up over the first hours; then no growth at all.
            #expect(sizes.max()! <= sizes[0] + sizes[0] / 10, "pages at each hour: \(sizes)")
            #expect(sizes[4] <= sizes[2], "pages at each hour: \(sizes)")
            await database.close()
        }
    }

    @Test(arguments: Backend.allCases)
    func markReadReturnsExactlyTheIdsThatChangedAndKeepsTheCounterRight(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            var ids: [String] = []
            for index in 0..<5 {
                ids.append(try #require(Self.created(try await repository.apply([Self.event(resource: "p\(index)")]).outcomes[0])))
            }
            let other = try #require(Self.created(try await repository.apply([Self.event(owner: "cy")]).outcomes[0]))
            #expect(try await repository.unreadCount(owner: "ana") == 5)
            // Unknown, foreign and repeated ids change nothing.
            let changed = try await repository.markRead(owner: "ana", ids: [ids[0], ids[1], ids[1], "01ZZZZZZZZZZZZZZZZZZZZZZZZ", other])
            #expect(changed == [ids[0], ids[1]])
            #expect(try await repository.unreadCount(owner: "ana") == 3)
            #expect(try await repository.unreadCount(owner: "cy") == 1)
            #expect(try await repository.markRead(owner: "ana", ids: [ids[0]]).isEmpty, "already read")
            let feed = try await repository.feed(owner: "ana", limit: 10).items
            #expect(feed.filter(\.read).map(\.id).sorted() == [ids[0], ids[1]])
            // A read notification retracted later leaves the counter alone.
            _ = try await repository.apply([Self.event("post.unlike", resource: "p0")])
            #expect(try await repository.unreadCount(owner: "ana") == 3)
            let all = try await repository.markAllRead(owner: "ana")
            #expect(Set(all) == Set(ids[2...]))
            #expect(try await repository.unreadCount(owner: "ana") == 0)
            #expect(try await repository.markAllRead(owner: "ana").isEmpty)
        }
    }

    @Test(arguments: Backend.allCases)
    func markAllReadWorksAcrossChunks(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            let count = repository.markReadChunk + 17
            let events = (0..<count).map { Self.event(resource: "r\($0)") }
            for start in stride(from: 0, to: count, by: repository.eventsPerTransaction) {
                _ = try await repository.apply(Array(events[start..<min(start + repository.eventsPerTransaction, count)]))
            }
            #expect(try await repository.unreadCount(owner: "ana") == Int64(count))
            #expect(try await repository.markAllRead(owner: "ana").count == count)
            #expect(try await repository.unreadCount(owner: "ana") == 0)
        }
    }

    @Test(arguments: Backend.allCases)
    func replayListsLiveNotificationsCreatedAfterAnIdOldestFirst(backend: Backend) async throws {
        try await Self.withRepository(backend) { repository in
            var ids: [String] = []
            for index in 0..<6 {
                ids.append(try #require(Self.created(try await repository.apply([Self.event(resource: "p\(index)")]).outcomes[0])))
            }
            _ = try await repository.apply([Self.event("post.unlike", resource: "p3")])
            let replay = try await repository.notifications(owner: "ana", after: ids[1], limit: 100)
            #expect(replay.map(\.id) == [ids[2], ids[4], ids[5]])
            #expect(try await repository.notifications(owner: "ana", after: ids[5], limit: 100).isEmpty)
            #expect(try await repository.notifications(owner: "ana", after: ids[1], limit: 2).map(\.id) == [ids[2], ids[4]])
        }
    }

    /// Two workers on one SQLite file race on the same action key: exactly
    /// one notification, and the counter agrees.
    @Test func concurrentWritersCannotBothCreate() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let one = try await SQLiteDatabase.open(.init(path: path))
            let two = try await SQLiteDatabase.open(.init(path: path))
            let repositories = [
                NotificationRepository(store: try await SQLiteKeyValueStore(database: one, tableName: "notifications")),
                NotificationRepository(store: try await SQLiteKeyValueStore(database: two, tableName: "notifications")),
            ]
            let outcomes = try await withThrowingTaskGroup(of: [EventOutcome].self) { group in
                for (index, repository) in repositories.enumerated() {
                    group.addTask {
                        var outcomes: [EventOutcome] = []
                        for round in 0..<50 {
                            let batch = (0..<10).map { Self.event(owner: "o\($0)", resource: "r\(round)", eventID: "w\(index)-\(round)-\($0)") }
                            outcomes += try await repository.apply(batch).outcomes
                        }
                        return outcomes
                    }
                }
                var all: [EventOutcome] = []
                for try await part in group { all += part }
                return all
            }
            #expect(outcomes.compactMap(Self.created).count == 500)
            #expect(outcomes.filter { $0 == .duplicate }.count == 500)
            for owner in 0..<10 {
                #expect(try await repositories[0].feed(owner: "o\(owner)", limit: 100).items.count == 50)
                #expect(try await repositories[1].unreadCount(owner: "o\(owner)") == 50)
            }
            await one.close()
            await two.close()
        }
    }
}
