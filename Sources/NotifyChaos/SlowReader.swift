import Foundation
import NATS
import ProcessSupport

/// A WebSocket client that never reads while 100,000 notifications go to
/// its user, beside 20 users whose clients read normally. The gateway must
/// close it as slow without growing, the others must not notice, and the
/// client must get everything back when it resumes.
enum SlowReader {
    static let notifications = 100_000

    static func run(_ harness: Harness, _ checks: inout Checks) async throws {
        let worker = try await harness.startNotify("worker")
        let gateway = try await harness.startNotify("gateway")
        let port = try await gateway.waitForPort()
        let probe = LatencyProbe()
        let clients = (0..<20).map { FeedClient(user: "s\($0)", token: Tokens.valid(user: "s\($0)"), probe: probe) }
        let clientTasks = clients.map { client in Task { await client.run(port: port) } }
        let connected = await waitFor(timeout: .seconds(10)) { clients.allSatisfy { $0.snapshot.hellos > 0 } ? true : nil } ?? false
        guard connected else { throw ChaosError("the 20 reading clients did not get their hello within 10 s") }

        progress("baseline: 100,000 notifications for 'firehose-a' (no client) at 5,000/s; 100/s for 20 reading users")
        let baseline = try await load(harness, target: "firehose-a", probe: probe)
        _ = await harness.waitUntilDrained(timeout: .seconds(60))
        try await Task.sleep(for: .seconds(1))
        let rssBefore = gateway.currentRSSKiB()

        // The same again, for a user whose only client never reads.
        let slow = try RawSocket(port: port, receiveBuffer: 4_096)
        let token = Tokens.valid(user: "firehose")
        let status = await HTTPProbe.onThread { try? slow.upgrade(path: "/ws?access_token=\(token)", port: port) }
        guard status == 101 else { throw ChaosError("the never-reading client's upgrade answered \(status.map(String.init) ?? "nothing")") }
        progress("a client for 'firehose' that never reads; 100,000 notifications for it at 5,000/s; 100/s for the others")
        let sampling = Task {
            var highest = gateway.currentRSSKiB()
            while !Task.isCancelled {
                highest = max(highest, gateway.currentRSSKiB())
                try? await Task.sleep(for: .milliseconds(200))
            }
            return highest
        }
        let during = try await load(harness, target: "firehose", probe: probe)
        let drained = await harness.waitUntilDrained(timeout: .seconds(60))
        try await Task.sleep(for: .seconds(6))  // the 5 s the gateway gives a closed client to answer
        sampling.cancel()
        let rssPeak = await sampling.value
        let metrics = (try? await HTTPProbe.request(port: port, path: "/metrics")).map { String(decoding: $0.body, as: UTF8.self) } ?? ""
        let slowClosed = metrics.split(separator: "\n").first { $0.hasPrefix("notify_slow_clients_closed_total") }
            .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) } ?? -1

        // The client reads what reached it, then resumes from its last id.
        let (received, closeFrame, closed) = await HTTPProbe.onThread { () -> ([String], RawSocket.Frame?, Bool) in
            var ids: [String] = []
            var close: RawSocket.Frame?
            let closed = slow.drain(idleMilliseconds: 3_000) { frame in
                if frame.closeCode != nil { close = frame }
                if let id = createdID(frame) { ids.append(id) }
            }
            return (ids, close, closed)
        }
        checks.add("the never-reading client is closed as slow (1013 queued for it, connection ended)",
                   "notify_slow_clients_closed_total \(Int(slowClosed)); connection ended by the gateway \(closed); it had received \(received.count) notifications before its buffers filled\(closeFrame.map { "; close frame \($0.closeCode ?? 0) \"\($0.closeReason)\"" } ?? "; the close frame was behind the unsent data")",
                   slowClosed == 1 && closed)
        checks.add("gateway RSS bounded while 100,000 notifications go to a client that never reads (≤ 16 MiB above its size before)",
                   "RSS \(rssBefore) KiB before, \(rssPeak) KiB at most (+\(rssPeak - rssBefore) KiB)", rssPeak - rssBefore <= 16 * 1_024)

        let before = probe.latencies(baseline.map(\.key))
        let with = probe.latencies(during.map(\.key))
        let (p99Before, p99With) = (percentile(before, 0.99), percentile(with, 0.99))
        var closes: [String: Int] = [:]
        for client in clients { closes.merge(client.snapshot.closeCodes) { $0 + $1 } }
        checks.add("others' p99 unchanged: publish → WebSocket frame p99 for 20 reading users with the slow client ≤ 2 × without it + 2 ms; none of them closed",
                   "without it \(latencySummary(before, of: baseline.count)); with it \(latencySummary(with, of: during.count)); reading clients' closes \(closes.isEmpty ? "none" : closes.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))",
                   before.count == baseline.count && with.count == during.count && p99With <= 2 * p99Before + 2 && closes.isEmpty)

        // Resume: since=<last id> is far more than 1,000 behind, so the
        // gateway answers reset and the client reloads the feed.
        let last = received.max()
        let resumed = await HTTPProbe.onThread { () -> [RawSocket.Frame] in
            guard let socket = try? RawSocket(port: port),
                  (try? socket.upgrade(path: "/ws?access_token=\(token)" + (last.map { "&since=\($0)" } ?? ""), port: port)) == 101 else { return [] }
            var frames: [RawSocket.Frame] = []
            _ = socket.drain(idleMilliseconds: 2_000) { frames.append($0) }
            return frames
        }
        let types = resumed.map { (try? JSONSerialization.jsonObject(with: Data($0.payload))) as? [String: Any] }.map { $0?["type"] as? String ?? "?" }
        var recovered = Set(received).union(resumed.compactMap(createdID))
        if types.contains("reset") { recovered.formUnion(try await GatewayCrashes.feedIDs(port: port, user: "firehose")) }
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        let stored = Set(snapshot.notifications.filter { $0.owner == "firehose" }.map(\.id))
        checks.add("resume recovers all: since=<last id received> → hello then reset (more than 1,000 behind), the reloaded feed holds every notification",
                   "resumed with since=\(last ?? "none"): \(types.prefix(3).joined(separator: ", "))\(types.count > 3 ? ", … (\(types.count) frames)" : ""); recovered \(recovered.intersection(stored).count)/\(stored.count) stored notifications (\(notifications) published)",
                   types.first == "hello" && (types.contains("reset") || last == nil) && recovered.isSuperset(of: stored) && stored.count == notifications)

        for client in clients { client.stop() }
        for task in clientTasks { await task.value }
        var required: [String: Set<String>] = [:]
        for sent in baseline + during where sent.acknowledged { required[sent.owner, default: []].insert(sent.actionKey) }
        for target in ["firehose-a", "firehose"] { required[target] = Set((0..<notifications).map { firehoseEvent(target, $0).actionKey }) }
        checks.checkStore(snapshot, required: required)
        checks.checkDrained(drained)
        checks.add("worker and gateway still serving", "worker alive \(worker.isRunning), gateway alive \(gateway.isRunning)", worker.isRunning && gateway.isRunning)
        gateway.stop()
        worker.stop()
    }

    static func firehoseEvent(_ owner: String, _ index: Int) -> ChaosEvent {
        ChaosEvent(kind: "post.like", owner: owner, trigger: "t\(index % 500)", resource: "r\(index)", eventID: nil)
    }

    /// 100,000 notifications for `target` at 5,000/s while the probe sends
    /// 100/s to the 20 reading users; returns the probe events.
    static func load(_ harness: Harness, target: String, probe: LatencyProbe) async throws -> [LatencyProbe.Sent] {
        let jetStream = harness.jetStream
        let probing = Task { await probe.run(jetStream: jetStream, prefix: "s", owners: 20, rate: 100, duration: .seconds(20)) }
        let publisher = try JetStreamAsyncPublisher(connection: harness.connection, maxPending: 8_192)
        let clock = ContinuousClock()
        var deadline = clock.now
        for chunk in stride(from: 0, to: notifications, by: 500) {
            let messages = (chunk..<min(chunk + 500, notifications)).map { firehoseEvent(target, $0) }
                .map { JetStreamAsyncPublisher.Message(subject: $0.subject, payload: $0.body) }
            try await publisher.publish(messages)
            deadline += .milliseconds(100)
            try? await clock.sleep(until: deadline)
        }
        try await publisher.waitForAcks(timeout: .seconds(60))
        guard publisher.failureCount == 0 else {
            throw ChaosError("\(publisher.failureCount) firehose publishes failed: \(publisher.lastFailure ?? "?")")
        }
        return await probing.value
    }

    /// The id of a `notification.created` frame.
    static func createdID(_ frame: RawSocket.Frame) -> String? {
        guard frame.opcode == 1, let object = (try? JSONSerialization.jsonObject(with: Data(frame.payload))) as? [String: Any],
              object["type"] as? String == "notification.created" else { return nil }
        return (object["notification"] as? [String: Any])?["id"] as? String
    }
}
