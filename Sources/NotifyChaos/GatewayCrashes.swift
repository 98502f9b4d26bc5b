import Foundation
import NATS
import ProcessSupport

/// The gateway SIGKILLed three times while notifications flow to 20
/// connected users; each client resumes with `since=<last id>`, and in the
/// end has received exactly its feed.
enum GatewayCrashes {
    static func run(_ harness: Harness, _ checks: inout Checks) async throws {
        let worker = try await harness.startNotify("worker")
        var gateway = try await harness.startNotify("gateway")
        let port = try await gateway.waitForPort()
        let users = (0..<20).map { "g\($0)" }
        let clients = users.map { FeedClient(user: $0, token: Tokens.valid(user: $0)) }
        let clientTasks = clients.map { client in Task { await client.run(port: port) } }

        // A first notification each, so every client has an id to resume from.
        var events = users.map { ChaosEvent(kind: "user.follow", owner: $0, trigger: "first", resource: $0, eventID: "first-\($0)") }
        var mix = EventMix(owners: users.count, prefix: "g", duplicatePercent: 10, retractPercent: 0)
        events += (0..<3_000).map { _ in mix.next() }
        let log = PublishLog()
        for index in users.indices { await publish(events[index], index: index, jetStream: harness.jetStream, log: log) }
        let ready = await waitFor(timeout: .seconds(20)) { clients.allSatisfy { !$0.snapshot.created.isEmpty } ? true : nil } ?? false
        guard ready else { throw ChaosError("not every client received its first notification within 20 s") }

        let jetStream = harness.jetStream
        let allEvents = events
        let startIndex = users.count
        progress("publishing 3,000 events over 20 users in bursts of 40 every 200 ms; SIGKILL the gateway 3 times")
        let publisher = Task { await publishInBursts(allEvents, jetStream: jetStream, log: log, burst: 40, interval: .milliseconds(200), from: startIndex) }
        for kill in 1...3 {
            await sleepRandom(2...4)
            gateway.signal(SIGKILL)
            guard await gateway.waitForExit() else { throw ChaosError("the gateway did not die on SIGKILL") }
            try await Task.sleep(for: .milliseconds(500))
            gateway = try await harness.startNotify("gateway", extra: ["PORT": String(port)])
            progress("gateway kill \(kill): restarted on port \(port)")
        }
        await publisher.value
        let drained = await harness.waitUntilDrained()
        try await Task.sleep(for: .seconds(3))

        var mismatches: [String] = []
        var duplicates = 0
        var resets = 0
        var reconnects = 0
        var received = 0
        for client in clients {
            // Frames still on their way (a slow reconnect) get a few seconds;
            // a real gap never closes, since the client does not reconnect again.
            var feed = try await feedIDs(port: port, user: client.user)
            let deadline = ContinuousClock.now + .seconds(10)
            while Set(client.snapshot.created) != feed, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(500))
                feed = try await feedIDs(port: port, user: client.user)
            }
            let state = client.snapshot
            duplicates += state.duplicates
            resets += state.resets
            reconnects += max(state.hellos - 1, 0)
            received += state.created.count
            let got = Set(state.created)
            if got != feed {
                let lines = ["feed not received: " + feed.subtracting(got).sorted().joined(separator: " "), "feed: " + feed.sorted().joined(separator: " ")] + state.trace
                try? lines.joined(separator: "\n").write(toFile: "\(harness.directory)/client-\(client.user).trace", atomically: false, encoding: .utf8)
                mismatches.append("\(client.user): \(feed.subtracting(got).count) in the feed not received, \(got.subtracting(feed).count) received not in the feed")
            }
        }
        for client in clients { client.stop() }
        for task in clientTasks { await task.value }

        checks.add("the fault took effect: clients lost their connection and resumed",
                   "3 SIGKILLs; \(reconnects) reconnections (hello frames after the first) over \(clients.count) clients",
                   reconnects >= 3 * clients.count)
        checks.add("each client's received set = its feed (GET /v1/notifications, paginated); no duplicate, no reset",
                   "\(clients.count - mismatches.count)/\(clients.count) equal, \(received) notifications received\(mismatches.isEmpty ? "" : "; " + mismatches.prefix(3).joined(separator: "; ")); \(duplicates) duplicates, \(resets) resets",
                   mismatches.isEmpty && duplicates == 0 && resets == 0)
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        checks.checkStore(snapshot, expected: Oracle.expected(allEvents, acknowledged: log.acknowledged))
        checks.checkDrained(drained)
        gateway.stop()
        worker.stop()
    }

    /// Every id in the user's feed, newest first, page by page.
    static func feedIDs(port: Int, user: String) async throws -> Set<String> {
        let token = Tokens.valid(user: user)
        var ids = Set<String>()
        var before: String?
        repeat {
            let path = "/v1/notifications?limit=100" + (before.map { "&before=\($0)" } ?? "")
            let reply = try await HTTPProbe.request(port: port, path: path, headers: [("Authorization", "Bearer \(token)")])
            guard reply.status == 200, let page = reply.json, let items = page["items"] as? [[String: Any]] else {
                throw ChaosError("GET \(path) for \(user) answered \(reply.status): \(String(decoding: reply.body.prefix(200), as: UTF8.self))")
            }
            for item in items { if let id = item["id"] as? String { ids.insert(id) } }
            before = page["next"] as? String
        } while before != nil
        return ids
    }
}
