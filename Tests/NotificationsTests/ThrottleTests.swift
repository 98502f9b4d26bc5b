import KeyValueStore
@testable import Notifications
import Testing
import TestSupport

/// Throttling: token buckets, and what the store does with throttled events.
@Suite("Throttling")
struct ThrottleTests {
    typealias R = RepositoryTests

    @Test func bucketsAllowABurstThenTheRate() {
        let throttle = Throttle(limits: ThrottleLimits(owner: .init(perMinute: 60, burst: 5), triggerUser: .init(perMinute: 6, burst: 2)))
        #expect(throttle.admit(owner: "ana", trigger: "ben", now: 0) == nil)
        #expect(throttle.admit(owner: "ana", trigger: "ben", now: 0) == nil)
        #expect(throttle.admit(owner: "ana", trigger: "ben", now: 0) == .triggerUser)
        // Ben's bucket refills one token in 10 s; others are not held back by him.
        #expect(throttle.admit(owner: "ana", trigger: "cy", now: 0) == nil)
        #expect(throttle.admit(owner: "ana", trigger: "dee", now: 0) == nil)
        #expect(throttle.admit(owner: "ana", trigger: "eve", now: 0) == nil)
        #expect(throttle.admit(owner: "ana", trigger: "fay", now: 0) == .owner)
        #expect(throttle.admit(owner: "bob", trigger: "ben", now: 0) == nil)
        #expect(throttle.admit(owner: "ana", trigger: "ben", now: 10) == nil)
        #expect(throttle.admit(owner: "ana", trigger: "ben", now: 10) == .triggerUser)
        #expect(throttle.admit(owner: "ana", trigger: "gus", now: 11) == nil)
    }

    @Test(arguments: Backend.allCases)
    func throttledEventsFoldIntoOneNotificationPerKindAndCanBeTakenBack(backend: Backend) async throws {
        try await R.withRepository(backend) { repository in
            func throttled(_ event: IncomingEvent, _ reason: Throttled) -> IncomingEvent {
                var event = event
                event.throttled = reason
                return event
            }
            let first = try await repository.apply([throttled(R.event("reply.post", trigger: "ben", resource: "p1"), .triggerUser)])
            let id = try #require(R.created(first.outcomes[0]))
            let more = try await repository.apply([
                throttled(R.event("reply.post", trigger: "ben", resource: "p2"), .triggerUser),
                throttled(R.event("post.like", trigger: "ben", resource: "p3"), .triggerUser),
                throttled(R.event("reply.post", trigger: "cy", resource: "p4"), .owner),
                throttled(R.event("reply.post", trigger: "dee", resource: "p5"), .owner),
            ])
            guard case .aggregated(_, let replaces) = more.outcomes[0] else {
                Issue.record("got \(more.outcomes)")
                return
            }
            #expect(replaces == id)
            let feed = try await repository.feed(owner: "ana", limit: 10).items
            // Ben's replies; Ben's like; everyone's replies (cy, dee).
            #expect(feed.count == 3)
            let everyone = feed[0], likes = feed[1], bens = feed[2]
            #expect(everyone.group?.throttled == true)
            #expect(everyone.group?.actors.map(\.triggerUser) == ["dee", "cy"])
            #expect(everyone.resourceID == "p5")
            #expect(likes.group?.actorCount == 1)
            #expect(bens.group?.actorCount == 2)
            #expect(bens.resourceID == "p2", "the newest event's resource")
            #expect(bens.actionKey == "3#POST#p2#ben")
            #expect(try await repository.unreadCount(owner: "ana") == 3)
            // Deduplication and retraction still hold per event.
            #expect(try await repository.apply([throttled(R.event("reply.post", trigger: "ben", resource: "p1"), .triggerUser)]).outcomes == [.duplicate])
            #expect(try await repository.apply([R.event("post.unlike", trigger: "ben", resource: "p3")]).outcomes == [.retracted(id: likes.id)])
            #expect(try await repository.feed(owner: "ana", limit: 10).items.count == 2)
        }
    }
}
