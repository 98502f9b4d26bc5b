import KeyValueStore
@testable import Notifications
import Testing
import TestSupport

/// `priority` and `deliver_at`.
@Suite("Priority and scheduling")
struct SchedulingTests {
    typealias R = RepositoryTests
    typealias V = EventValidatorTests

    /// An event for `ana` with extra fields (JSON fragments), validated at `now`.
    static func event(
        _ kind: String = "post.like", trigger: String = "ben", resource: String = "p1", now: Int64 = V.now, with extra: [String: String] = [:]
    ) -> IncomingEvent {
        let kind = EventKind.named(kind)!
        var fields: [String: String?] = [
            "owner": V.q("ana"), "trigger_user": V.q(trigger), "action": String(kind.action), "resource_type": V.q(kind.resourceType),
            "resource_id": V.q(resource), "created_at": String(V.now),
        ]
        for (name, value) in extra { fields[name] = value }
        let event = try! V.validator.validate(subject: "notifications." + kind.name, body: V.body(fields), now: now).get()
        return IncomingEvent(event: event, idempotencyKey: nil)
    }

    @Test func priorityAndDeliverAtAreValidated() {
        for (fields, problem) in [
            (["priority": V.q("urgent")], "priority"), (["priority": "1"], "priority"),
            (["deliver_at": String(V.now + 30 * 86_400 + 1)], "deliver_at"), (["deliver_at": V.q("soon")], "deliver_at"),
        ] {
            guard case .failure(let rejection) = V.validate(V.body(fields)) else {
                Issue.record("\(fields) was accepted")
                continue
            }
            #expect(rejection.reason == .invalidField)
            #expect(rejection.detail.contains(problem))
        }
        let scheduled = try? V.validate(V.body(["deliver_at": String(V.now + 30 * 86_400), "priority": V.q("high")])).get()
        #expect(scheduled?.deliverAt == V.now + 30 * 86_400)
        #expect(scheduled?.priority == .high)
        // A time already passed is now.
        #expect((try? V.validate(V.body(["deliver_at": String(V.now - 10)])).get())?.deliverAt == nil)
    }

    @Test(arguments: Backend.allCases)
    func aScheduledNotificationIsInvisibleUntilItsTimeThenTheNewest(backend: Backend) async throws {
        let clock = ManualClock(V.now)
        try await backend.withStore(clock: clock) { store in
            let repository = NotificationRepository(store: store, aggregateWindow: .seconds(3_600), clockMilliseconds: { clock.now * 1000 })
            let result = try await repository.apply([Self.event(with: ["deliver_at": String(V.now + 60), "priority": V.q("high")])])
            guard case .scheduled(_, let at) = result.outcomes[0] else {
                Issue.record("got \(result.outcomes)")
                return
            }
            #expect(at == V.now + 60)
            #expect(result.outbox == nil)
            #expect(try await repository.apply([Self.event()]).outcomes == [.duplicate])
            let reply = try #require(R.created(try await repository.apply([Self.event("reply.post", trigger: "cy")]).outcomes[0]))
            #expect(try await repository.feed(owner: "ana", limit: 10).items.map(\.id) == [reply])
            #expect(try await repository.unreadCount(owner: "ana") == 1)
            #expect(try await repository.scheduledCount() == 1)

            clock.advance(by: 59)
            #expect(try await repository.releaseDue().released == 0)
            clock.advance(by: 1)
            let released = try await repository.releaseDue()
            #expect(released.released == 1)
            let message = String(decoding: try #require(released.outbox?.messages.first).body, as: UTF8.self)
            #expect(message.contains(#""priority":"high""#))
            let feed = try await repository.feed(owner: "ana", limit: 10).items
            #expect(feed.count == 2)
            #expect(feed[0].id > reply, "released as the newest")
            #expect(feed[0].triggerUser == "ben")
            #expect(try await repository.unreadCount(owner: "ana") == 2)
            #expect(try await repository.scheduledCount() == 0)
            #expect(try await repository.releaseDue().released == 0)
            // The action key points to it: the unlike takes it back.
            #expect(try await repository.apply([Self.event("post.unlike")]).outcomes == [.retracted(id: feed[0].id)])
        }
    }

    @Test(arguments: Backend.allCases)
    func aRetractionBeforeTheTimeTakesTheScheduleBack(backend: Backend) async throws {
        let clock = ManualClock(V.now)
        try await backend.withStore(clock: clock) { store in
            let repository = NotificationRepository(store: store, clockMilliseconds: { clock.now * 1000 })
            _ = try await repository.apply([Self.event(with: ["deliver_at": String(V.now + 10)])])
            #expect(try await repository.apply([Self.event("post.unlike")]).outcomes == [.unscheduled])
            clock.advance(by: 20)
            #expect(try await repository.releaseDue().released == 0)
            #expect(try await repository.scheduledCount() == 0)
            #expect(try await repository.feed(owner: "ana", limit: 10).items.isEmpty)
            #expect(try await repository.unreadCount(owner: "ana") == 0)
            // Liking again notifies at once.
            #expect(R.created(try await repository.apply([Self.event()]).outcomes[0]) != nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func highPriorityGoesFirstWithinABatchWithoutReorderingOneNotification(backend: Backend) async throws {
        try await R.withRepository(backend) { repository in
            let result = try await repository.apply([
                Self.event(resource: "p1"),
                Self.event("reply.post", trigger: "cy", resource: "p2", with: ["priority": V.q("high")]),
                Self.event(resource: "p3", with: ["priority": V.q("low")]),
                // A like and its high-priority unlike: created, then deleted.
                Self.event(resource: "p4"),
                Self.event("post.unlike", resource: "p4", with: ["priority": V.q("high")]),
            ])
            let bodies = try #require(result.outbox).messages.map { String(decoding: $0.body, as: UTF8.self) }
            #expect(bodies.count == 5)
            #expect(bodies[0].contains(#""resource_id":"p2""#))
            #expect(bodies[1].contains(#""resource_id":"p1""#))
            #expect(bodies[2].contains(#""resource_id":"p3""#))
            #expect(bodies[3].contains(#""resource_id":"p4""#))
            #expect(bodies[4].hasPrefix(#"{"type":"notification.deleted""#))
            // The outbox, as republished after a crash, keeps the order
            // (the created message of the deleted p4 is left out).
            let pending = try #require(try await repository.pendingOutboxes().first).messages.map { String(decoding: $0.body, as: UTF8.self) }
            #expect(pending == [bodies[0], bodies[1], bodies[2], bodies[4]])
        }
    }
}
