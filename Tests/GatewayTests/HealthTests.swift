import Foundation
import Gateway
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
