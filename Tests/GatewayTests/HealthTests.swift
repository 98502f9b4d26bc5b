import Foundation
@testable import Gateway
import NATS
import Testing
import TestSupport

@Suite("Gateway health", .serialized)
struct HealthTests {
    /// `/health` carries the consumer's backlog, the outbox depth and a
    /// store that accepts writes; it turns 503 when NATS goes away.
    @Test func healthReportsTheConsumerTheOutboxAndNATSLoss() async throws {
        try await GatewayHarness.run(configure: { configuration in
            configuration.consumer = ConsumerName(stream: "NOTIFICATIONS", name: "notification-worker")
        }) { (harness) async throws in
            try await harness.like(owner: "ana", resource: "health")
            let token = harness.token("ana")
            #expect(await eventually { (try? await harness.get("/v1/notifications/unread_count", token: token).json["unread"] as? Int) == 1 })

            let health = try await harness.get("/health", token: nil)
            #expect(health.status == 200)
            #expect(health.json["store"] as? String == "ok")
            #expect(health.json["outbox_batches"] is Int)
            #expect(health.json["nats_reconnects"] as? Int == 0)
            let consumer = try #require(health.json["consumer"] as? [String: Any])
            #expect(consumer["stream"] as? String == "NOTIFICATIONS")
            #expect(consumer["name"] as? String == "notification-worker")
            #expect(await eventually {
                let now = try? await harness.get("/health", token: nil).json["consumer"] as? [String: Any]
                return now?["pending"] as? Int == 0 && now?["ack_pending"] as? Int == 0
            })

            await harness.server.stop()
            #expect(await eventually {
                let down = try? await harness.get("/health", token: nil)
                return down?.status == 503 && down?.json["status"] as? String == "unavailable" && down?.json["consumer"] is NSNull
            })
        }
    }
}

@Suite("Repeated per-user messages")
struct RepeatTests {
    /// A worker that crashed after publishing publishes its outbox again:
    /// the gateway passes each created or deleted message on once.
    @Test func aRepeatedMessageReachesClientsOnce() async throws {
        try await GatewayHarness.run { (harness) async throws in
            let tab = TestWebSocket(port: harness.port, path: "/ws?access_token=\(harness.token("ana"))")
            await tab.wait(for: 1)
            let published = try harness.connection.subscribe("users.ana.notifications")
            try await harness.connection.flush()
            try await harness.like(owner: "ana", resource: "once")
            var iterator = published.makeAsyncIterator()
            let original = try #require(await iterator.next()).payload
            let frames = await tab.wait(for: 2)
            let id = try #require((frames.last?["notification"] as? [String: Any])?["id"] as? String)

            // The same bytes again, as an outbox published twice would be;
            // then a deletion, twice.
            let deleted = Array(#"{"type":"notification.deleted","id":"\#(id)"}"#.utf8)
            for body in [original, deleted, deleted] {
                try harness.connection.publish("users.ana.notifications", payload: body)
            }
            try await harness.connection.flush()
            let after = await tab.wait(for: 3)
            try await Task.sleep(for: .milliseconds(300))
            #expect(tab.objects.count == 3, "hello, created once, deleted once: \(tab.objects.map { $0["type"] ?? "?" })")
            #expect(after.last?["type"] as? String == "notification.deleted")
            await tab.close()
        }
    }

    @Test func recentKeysRememberTheLast64() {
        var recent = RecentKeys()
        var results: [Bool] = []
        results.append(recent.insert("c1"))  // new
        results.append(recent.insert("c1"))  // repeat
        for index in 2...RecentKeys.capacity { results.append(recent.insert("c\(index)")) }
        results.append(recent.insert("c1"))  // still remembered
        results.append(recent.insert("c-new"))  // evicts c1, the oldest
        results.append(recent.insert("c1"))  // new again
        #expect(results == [true, false] + Array(repeating: true, count: RecentKeys.capacity - 1) + [false, true, true])
    }
}
