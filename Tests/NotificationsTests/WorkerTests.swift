import Foundation
import KeyValueStore
import NATS
@testable import Notifications
import Testing
import TestSupport

/// The worker against a real nats-server (JetStream) and a real SQLite
/// file; the tests that take a backend also run on the DynamoDB emulator.
@Suite("Worker", .serialized)
struct WorkerTests {
    @Test(arguments: EventKind.all.filter { $0.effect == .create })
    func everyCreateSubjectStoresAndPublishesTheNotification(kind: EventKind) async throws {
        try await WorkerHarness.run { harness in
            let worker = try await harness.startWorker()
            try await harness.publish(kind.name, owner: "owner-1", trigger: "actor-2", resource: "res-3", eventID: "ev-\(kind.name)")
            let messages = await harness.users.wait(for: 1)
            try #require(messages.count == 1)
            #expect(messages[0].subject == "users.owner-1.notifications")
            let body = try object(messages[0])
            #expect(body["type"] as? String == "notification.created")
            let notification = try #require(body["notification"] as? [String: Any])
            #expect(notification["action"] as? Int == Int(kind.action))
            #expect(notification["resource_type"] as? String == kind.resourceType)
            #expect(notification["action_key"] as? String == "\(kind.action)#\(kind.resourceType)#res-3#actor-2")
            #expect(notification["event_id"] == nil)
            let id = try #require(notification["id"] as? String)
            #expect(try await harness.waitUntilDrained())
            await worker.stop()
            let feed = try await harness.withRepository { try await $0.feed(owner: "owner-1", limit: 10) }
            #expect(feed.items.map(\.id) == [id])
        }
    }

    @Test(arguments: EventKind.all.filter { $0.effect == .retract })
    func everyRetractSubjectDeletesTheMatchingNotification(kind: EventKind) async throws {
        let create = EventKind.all.first { $0.effect == .create && $0.action == kind.action && $0.resourceType == kind.resourceType }!
        try await WorkerHarness.run { harness in
            let worker = try await harness.startWorker()
            try await harness.publish(create.name)
            let created = await harness.users.wait(for: 1)
            let id = try #require((try object(created[0])["notification"] as? [String: Any])?["id"] as? String)
            try await harness.publish(kind.name)
            let messages = await harness.users.wait(for: 2)
            try #require(messages.count == 2)
            #expect(String(decoding: messages[1].payload, as: UTF8.self) == #"{"type":"notification.deleted","id":"\#(id)"}"#)
            #expect(try await harness.waitUntilDrained())
            await worker.stop()
            #expect(try await harness.withRepository { try await $0.feed(owner: "ana", limit: 10) }.items.isEmpty)
        }
    }

    static let rejections: [(String, String, RejectionReason)] = [
        ("notifications.post.like", "this is not json", .invalidJSON),
        ("notifications.post.like", "[1,2,3]", .invalidJSON),
        ("notifications.post.like", #"{"owner":"ana","owner":"eve","trigger_user":"ben","action":1,"resource_type":"POST","resource_id":"p","created_at":1765318000}"#, .invalidJSON),
        ("notifications.post.like", "{\"pad\":\"" + String(repeating: "x", count: 65_536) + "\"}", .tooLarge),
        ("notifications.post.like", #"{"owner":"ana","trigger_user":"ben","action":1,"resource_type":"POST","created_at":1765318000}"#, .missingField),
        ("notifications.post.like", #"{"owner":"ana.b","trigger_user":"ben","action":1,"resource_type":"POST","resource_id":"p","created_at":1765318000}"#, .invalidField),
        ("notifications.post.like", #"{"owner":">","trigger_user":"ben","action":1,"resource_type":"POST","resource_id":"p","created_at":1765318000}"#, .invalidField),
        ("notifications.post.like", #"{"owner":"ana","trigger_user":"ben","action":1,"resource_type":"POST","resource_id":"p","created_at":9999999999}"#, .invalidField),
        ("notifications.post.like", #"{"owner":"ana","trigger_user":"ben","action":3,"resource_type":"POST","resource_id":"p","created_at":1765318000}"#, .actionMismatch),
        ("notifications.post.share", #"{"owner":"ana","trigger_user":"ben","action":1,"resource_type":"POST","resource_id":"p","created_at":1765318000}"#, .unknownSubject),
    ]

    @Test func rejectedEventsGoToTheDeadLetterSubjectWithTheirReasonAndAreNotRetried() async throws {
        try await WorkerHarness.run { harness in
            let worker = try await harness.startWorker()
            for (subject, body, _) in Self.rejections {
                try await harness.publish(subject, Array(body.utf8))
            }
            let letters = await harness.deadLetters.wait(for: Self.rejections.count)
            try #require(letters.count == Self.rejections.count)
            for (letter, (subject, body, reason)) in zip(letters, Self.rejections) {
                #expect(letter.subject == "dlq." + subject)
                #expect(letter.payload == Array(body.utf8), "the original body, unchanged")
                #expect(letter.headers["Notify-Error"] == reason.rawValue)
                #expect(letter.headers["Notify-Attempts"] == "1")
                #expect(letter.headers["Notify-Detail"]?.isEmpty == false)
            }
            // Terminated: nothing pending, nothing redelivered, nothing stored or delivered.
            #expect(try await harness.waitUntilDrained())
            try await Task.sleep(for: .seconds(2.5))  // longer than AckWait
            #expect(harness.deadLetters.messages.count == Self.rejections.count)
            #expect(harness.users.messages.isEmpty)
            // Dead letters are kept in their own stream.
            #expect(try await harness.jetStream.streamInfo("NOTIFICATIONS_DLQ")?.messages == UInt64(Self.rejections.count))
            await worker.stop()
            #expect(try await harness.withRepository { try await $0.feed(owner: "ana", limit: 10) }.items.isEmpty)
        }
    }

    /// An event as large as the server accepts leaves no room for the dead
    /// letter's headers: its body is cut to fit, and the headers say so.
    @Test func anEventTooLargeToDeadLetterWholeIsDeadLetteredCut() async throws {
        try await WorkerHarness.run { harness in
            let worker = try await harness.startWorker()
            let body = Array(("{\"pad\":\"" + String(repeating: "x", count: harness.connection.maxPayload - 10) + "\"}").utf8)
            #expect(body.count == harness.connection.maxPayload)
            try await harness.publish("notifications.post.like", body)
            let letters = await harness.deadLetters.wait(for: 1)
            try #require(letters.count == 1)
            #expect(letters[0].headers["Notify-Error"] == "too_large")
            #expect(letters[0].headers["Notify-Body-Truncated"] == String(body.count))
            #expect(letters[0].headers["Notify-Stream-Sequence"] == "1")
            #expect(letters[0].payload.count > body.count - 1_024)
            #expect(letters[0].payload == Array(body.prefix(letters[0].payload.count)))
            #expect(try await harness.waitUntilDrained())
            await worker.stop()
        }
    }

    @Test func aSelfNotificationCreatesNothingAndIsAcknowledged() async throws {
        try await WorkerHarness.run { harness in
            let worker = try await harness.startWorker()
            try await harness.publish("post.like", owner: "ana", trigger: "ana")
            #expect(try await harness.waitUntilDrained())
            try await Task.sleep(for: .milliseconds(300))
            #expect(harness.users.messages.isEmpty)
            #expect(harness.deadLetters.messages.isEmpty)
            await worker.stop()
            #expect(try await harness.withRepository { try await $0.feed(owner: "ana", limit: 10) }.items.isEmpty)
        }
    }

    @Test(arguments: Backend.shared)
    func likingTwiceNotifiesOnceAndUnlikeThenLikeNotifiesAgain(backend: Backend) async throws {
        try await WorkerHarness.run(backend: backend) { harness in
            let worker = try await harness.startWorker()
            try await harness.publish("post.like")
            try await harness.publish("post.like")
            #expect(try await harness.waitUntilDrained())
            try await Task.sleep(for: .milliseconds(200))
            #expect(harness.users.messages.count == 1)
            try await harness.publish("post.unlike")
            try await harness.publish("post.like")
            let messages = await harness.users.wait(for: 3)
            try #require(messages.count == 3)
            let types = try messages.map { try object($0)["type"] as? String }
            #expect(types == ["notification.created", "notification.deleted", "notification.created"])
            let first = try #require((try object(messages[0])["notification"] as? [String: Any])?["id"] as? String)
            let second = try #require((try object(messages[2])["notification"] as? [String: Any])?["id"] as? String)
            #expect(first != second)
            #expect(try await harness.waitUntilDrained())
            await worker.stop()
            let (feed, unread) = try await harness.withRepository { repository in
                (try await repository.feed(owner: "ana", limit: 10).items.map(\.id), try await repository.unreadCount(owner: "ana"))
            }
            #expect(feed == [second])
            #expect(unread == 1)
        }
    }

    @Test func unlikingNothingDeliversNothing() async throws {
        try await WorkerHarness.run { harness in
            let worker = try await harness.startWorker()
            try await harness.publish("post.unlike")
            try await harness.publish("user.unfollow", trigger: "cy")
            #expect(try await harness.waitUntilDrained())
            try await Task.sleep(for: .milliseconds(200))
            #expect(harness.users.messages.isEmpty)
            #expect(harness.deadLetters.messages.isEmpty)
            await worker.stop()
        }
    }

    @Test(arguments: Backend.shared)
    func theSameEventIDTwiceHasOneEffect(backend: Backend) async throws {
        try await WorkerHarness.run(backend: backend) { harness in
            let worker = try await harness.startWorker()
            try await harness.publish("post.like", resource: "a", eventID: "evt-1")
            try await harness.publish("post.like", resource: "b", eventID: "evt-1")  // same id, other content: ignored
            try await harness.publish("post.like", resource: "c", eventID: "evt-2")
            #expect(try await harness.waitUntilDrained())
            try await Task.sleep(for: .milliseconds(200))
            let resources = try harness.users.messages.map { (try object($0)["notification"] as? [String: Any])?["resource_id"] as? String }
            #expect(resources == ["a", "c"])
            await worker.stop()
        }
    }

    @Test(arguments: Backend.shared)
    func eventsPublishedWhileNoWorkerRunsAreProcessedWhenItStarts(backend: Backend) async throws {
        try await WorkerHarness.run(backend: backend) { harness in
            // A first run creates the stream and the durable consumer.
            await (try await harness.startWorker()).stop()
            for index in 0..<200 {
                try await harness.publish("post.like", owner: "u\(index % 20)", resource: "r\(index)")
            }
            #expect(try await harness.consumerBacklog().pending == 200)
            #expect(harness.users.messages.isEmpty)
            let worker = try await harness.startWorker()
            let messages = await harness.users.wait(for: 200)
            #expect(messages.count == 200)
            #expect(try await harness.waitUntilDrained())
            await worker.stop()
            let total = try await harness.withRepository { repository in
                var total = 0
                for owner in 0..<20 { total += try await repository.feed(owner: "u\(owner)", limit: 100).items.count }
                return total
            }
            #expect(total == 200)
        }
    }

    @Test(arguments: Backend.shared)
    func twoWorkersSharingTheConsumerProcessEachEventOnce(backend: Backend) async throws {
        try await WorkerHarness.run(backend: backend) { harness in
            let one = try await harness.startWorker()
            let two = try await harness.startWorker()
            // The emulator serves one request at a time and copies a table
            // per transaction: fewer events keep its run short.
            let count = backend == .dynamodb ? 500 : 2_000
            let publisher = try JetStreamAsyncPublisher(connection: harness.connection)
            let events = (0..<count).map { index in
                JetStreamAsyncPublisher.Message(
                    subject: "notifications.post.like",
                    payload: WorkerHarness.body(of: RepositoryTests.event(owner: "u\(index % 50)", trigger: "t\(index % 7)", resource: "r\(index)")))
            }
            try await publisher.publish(events)
            try await publisher.waitForAcks()
            let messages = await harness.users.wait(for: count, timeout: .seconds(30))
            #expect(try await harness.waitUntilDrained())
            try await Task.sleep(for: .milliseconds(300))
            #expect(harness.users.messages.count == count)
            let ids = try messages.compactMap { (try object($0)["notification"] as? [String: Any])?["id"] as? String }
            #expect(Set(ids).count == count)
            await one.stop()
            await two.stop()
            let stored = try await harness.withRepository { repository in
                var stored = 0
                for owner in 0..<50 {
                    stored += try await repository.feed(owner: "u\(owner)", limit: 100).items.count
                    #expect(try await repository.unreadCount(owner: "u\(owner)") == Int64(count / 50))
                }
                return stored
            }
            #expect(stored == count)
        }
    }

    /// A worker that died between its commit and its publish leaves an
    /// outbox; a running worker publishes it once it is older than
    /// `orphanedOutboxAge`, without waiting for a restart.
    @Test(arguments: Backend.shared)
    func aRunningWorkerPublishesAnOutboxAnotherWorkerLeftBehind(backend: Backend) async throws {
        try await WorkerHarness.run(backend: backend) { harness in
            var configuration = WorkerHarness.configuration()
            configuration.orphanedOutboxAge = .milliseconds(500)
            let worker = try await harness.startWorker(configuration)
            // The dead worker's commit: stored, its outbox never published.
            let left = try await harness.withRepository { repository in
                try await repository.apply([RepositoryTests.event(owner: "ana", trigger: "ben", resource: "orphan")])
            }
            let outbox = try #require(left.outbox)
            let messages = await harness.users.wait(for: 1, timeout: .seconds(10))
            #expect(messages.map(\.subject) == ["users.ana.notifications"])
            let published = try messages.first.map { try object($0)["notification"] as? [String: Any] }
            #expect(published??["resource_id"] as? String == "orphan")
            #expect(try await eventually { try await harness.withRepository { try await $0.pendingOutboxes().isEmpty } })
            #expect(!outbox.messages.isEmpty)
            await worker.stop()
        }
    }

    /// A store failure naks with backoff; after the last delivery the event
    /// is dead-lettered as `store_failed`, while other events are stored.
    @Test(arguments: Backend.shared)
    func aPoisonEventIsDeadLetteredAfterMaxDeliverWithoutHoldingBackOthers(backend: Backend) async throws {
        try await WorkerHarness.run(backend: backend) { harness in
            let worker = try await harness.startWorker(WorkerHarness.configuration(maxDeliver: 3)) { store in
                FaultInjectingStore(base: store, poisonedPartition: "U#poison", code: .internalError)
            }
            try await harness.publish("post.like", owner: "poison")
            try await harness.publish("post.like", owner: "healthy")
            let delivered = await harness.users.wait(for: 1)
            #expect(delivered.map(\.subject) == ["users.healthy.notifications"])
            let letters = await harness.deadLetters.wait(for: 1)
            try #require(letters.count == 1)
            #expect(letters[0].subject == "dlq.notifications.post.like")
            #expect(letters[0].headers["Notify-Error"] == "store_failed")
            #expect(letters[0].headers["Notify-Attempts"] == "3")
            #expect(try await harness.waitUntilDrained())
            try await Task.sleep(for: .seconds(1))
            #expect(harness.deadLetters.messages.count == 1)
            await worker.stop()
        }
    }

    /// An unavailable store (disk full, locked) is not the events' fault:
    /// the worker holds them, in progress, for as long as it lasts (here
    /// longer than AckWait × MaxDeliver), dead-letters nothing, and stores
    /// everything once the store is back.
    @Test(arguments: Backend.shared)
    func anUnavailableStoreHoldsEventsWithoutSpendingDeliveriesAndCatchesUp(backend: Backend) async throws {
        try await WorkerHarness.run(backend: backend) { harness in
            let outage = Flag(true)
            let worker = try await harness.startWorker(WorkerHarness.configuration(maxDeliver: 2)) { store in
                FaultInjectingStore(base: store, poisonedPartition: "U#ana", code: .unavailable, isFailing: { outage.value })
            }
            try await harness.publish("post.like")
            try await harness.publish("post.like", resource: "p2")
            try await Task.sleep(for: .seconds(5))  // AckWait 2 s, MaxDeliver 2
            #expect(harness.users.messages.isEmpty)
            #expect(harness.deadLetters.messages.isEmpty)
            let backlog = try await harness.consumerBacklog()
            #expect(backlog.pending + UInt64(backlog.ackPending) == 2, "still in JetStream, not lost")
            outage.value = false
            #expect(await harness.users.wait(for: 2).count == 2)
            #expect(try await harness.waitUntilDrained())
            let consumer = try #require(try await harness.jetStream.consumerInfo(stream: "NOTIFICATIONS", name: "notification-worker"))
            #expect(consumer.numRedelivered == 0, "held in progress, never redelivered")
            #expect(harness.deadLetters.messages.isEmpty)
            await worker.stop()
        }
    }

    @Test func theCoreNATSModeStoresAndPublishes() async throws {
        try await WorkerHarness.run { harness in
            let worker = try await harness.startWorker(WorkerHarness.configuration(jetStream: false))
            try await worker.connection.flush()
            let event = RepositoryTests.event(eventID: "core-1")
            try harness.connection.publish("notifications.post.like", payload: WorkerHarness.body(of: event))
            try harness.connection.publish("notifications.post.like", payload: WorkerHarness.body(of: event))
            try harness.connection.publish("notifications.post.like", payload: Array("bad".utf8))
            let messages = await harness.users.wait(for: 1)
            #expect(messages.count == 1)
            let letters = await harness.deadLetters.wait(for: 1)
            #expect(letters.first?.headers["Notify-Error"] == "invalid_json")
            try await Task.sleep(for: .milliseconds(300))
            #expect(harness.users.messages.count == 1)
            await worker.stop()
        }
    }
}
