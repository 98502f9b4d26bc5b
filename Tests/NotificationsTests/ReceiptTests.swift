import KeyValueStore
@testable import Notifications
import Testing
import TestSupport

/// Delivery receipts: created → delivered → seen → read.
@Suite("Delivery receipts")
struct ReceiptTests {
    typealias R = RepositoryTests

    @Test(arguments: Backend.allCases)
    func receiptsMoveANotificationFromCreatedToDeliveredSeenAndRead(backend: Backend) async throws {
        let clock = ManualClock(1_765_318_000)
        try await backend.withStore(clock: clock) { store in
            let repository = NotificationRepository(store: store, aggregateWindow: .seconds(3_600), clockMilliseconds: { clock.now * 1000 })
            let ids = try await repository.apply([
                R.event("reply.post", trigger: "ben", resource: "p1"), R.event("reply.post", trigger: "cy", resource: "p2"),
                R.event("post.like", trigger: "dee", resource: "p3"),
            ]).outcomes.compactMap(R.created)
            func states() async throws -> [String] {
                try await repository.feed(owner: "ana", limit: 10).items.reversed().map(\.state)
            }
            #expect(try await states() == ["created", "created", "created"])

            clock.advance(by: 2)
            let first = try await repository.recordReceipts([
                Receipt(owner: "ana", id: ids[0], kind: .delivered),
                // Seen before any ack: delivered too.
                Receipt(owner: "ana", id: ids[1], kind: .seen),
                Receipt(owner: "ana", id: ids[1], kind: .delivered),
                // Unknown ids and other users' ids change nothing.
                Receipt(owner: "ana", id: "01ARZ3NDEKTSV4RRFFQ69G5FAV", kind: .seen),
                Receipt(owner: "bob", id: ids[2], kind: .seen),
            ])
            #expect(first.delivered == 2)
            #expect(first.seen == 1)
            #expect(try await states() == ["delivered", "seen", "created"])
            let record = try await repository.feed(owner: "ana", limit: 10).items[1]
            #expect(record.seenAt == (clock.now) * 1000)
            #expect(String(decoding: record.json, as: UTF8.self).contains(#""state":"seen","delivered_at":\#(clock.now * 1000),"seen_at":\#(clock.now * 1000)"#))
            // Repeats change nothing: the first time stays.
            clock.advance(by: 5)
            let again = try await repository.recordReceipts([Receipt(owner: "ana", id: ids[0], kind: .delivered)])
            #expect(again.delivered == 0 && again.seen == 0)

            #expect(try await repository.markRead(owner: "ana", ids: [ids[0]]) == [ids[0]])
            #expect(try await states() == ["read", "seen", "created"])
            #expect(try await repository.feed(owner: "ana", limit: 10).items[2].readAt == clock.now * 1000)

            // A like that joins the group makes it a new notification: created again.
            _ = try await repository.recordReceipts([Receipt(owner: "ana", id: ids[2], kind: .seen)])
            _ = try await repository.apply([R.event("post.like", trigger: "eve", resource: "p3")])
            let group = try await repository.feed(owner: "ana", limit: 1).items[0]
            #expect(group.group?.actorCount == 2)
            #expect(group.state == "created")
            #expect(group.deliveredAt == nil && group.seenAt == nil)
        }
    }
}
