import DynamoDBStore
import Foundation
import KeyValueStore
import NATS
import ProcessSupport
import Synchronization

/// `make cluster-test`: notify scaled out on one machine. Three
/// nats-servers in a cluster with the event stream on three replicas, moto's
/// DynamoDB server as the shared store, two `notify worker` and two
/// `notify gateway` processes, and two WebSocket clients per user, one on
/// each gateway. Events flow while one NATS node and one worker are killed.
final class ClusterWorld: Sendable {
    static let table = "cluster-notifications"

    let directory: String
    let emulator: DynamoDBEmulatorProcess
    let servers: [NATSServerProcess]
    /// The suite's own connection, to the first node only (never killed).
    let connection: NATSConnection
    let jetStream: JetStream
    let store: DynamoDBKeyValueStore
    private let started = Mutex<[NotifyProcess]>([])

    private init(
        directory: String, emulator: DynamoDBEmulatorProcess, servers: [NATSServerProcess], connection: NATSConnection,
        jetStream: JetStream, store: DynamoDBKeyValueStore
    ) {
        self.directory = directory
        self.emulator = emulator
        self.servers = servers
        self.connection = connection
        self.jetStream = jetStream
        self.store = store
    }

    /// Starts the emulator and the cluster, and creates the table with
    /// `notify store create-table`.
    static func start(name: String) async throws -> ClusterWorld {
        let directory = "/tmp/chaos-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let emulator = try await DynamoDBEmulatorProcess.start(log: directory + "/moto.log")
        let servers: [NATSServerProcess]
        do {
            servers = try await NATSServerProcess.startCluster(directory: directory, size: 3)
        } catch {
            emulator.stop()
            throw error
        }
        progress("\(name): nats-servers on ports \(servers.map { String($0.port) }.joined(separator: ", ")), DynamoDB emulator at \(emulator.endpoint), files in \(directory)")
        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [servers[0].url], name: "cluster-suite"))
        let jetStream = try JetStream(connection: connection, requestTimeout: .seconds(10))
        let store = try DynamoDBKeyValueStore(configuration: DynamoDBConfiguration(
            endpoint: emulator.endpoint, region: "us-east-1",
            credentials: AWSCredentials(accessKeyID: "testing", secretAccessKey: "testing"), tableName: table))
        let world = ClusterWorld(directory: directory, emulator: emulator, servers: servers, connection: connection, jetStream: jetStream, store: store)
        try await emulator.createTable(environment: world.environment(urls: [servers[0].url], [:]), log: directory + "/create-table.log")
        return world
    }

    /// The environment of every `notify` process: the cluster's URLs in
    /// the order given, the emulator's table, streams on 3 replicas.
    func environment(urls: [String], _ extra: [String: String]) -> [String: String] {
        [
            "NATS_URL": urls.joined(separator: ","), "NATS_STREAM_REPLICAS": "3", "DATA_DIR": directory + "/data",
            "LOG_LEVEL": "info", "ENVIRONMENT": "development", "JWT_SECRET": Harness.secret, "HOST": "127.0.0.1", "PORT": "0",
        ].merging(emulator.notifyEnvironment(table: Self.table)) { _, new in new }.merging(extra) { _, new in new }
    }

    func startNotify(_ command: String, log: String, urls: [String], extra: [String: String] = [:]) throws -> NotifyProcess {
        let process = try NotifyProcess.start(command: command, environment: environment(urls: urls, extra), log: directory + "/" + log)
        started.withLock { $0.append(process) }
        return process
    }

    /// The server a process logged as connected on its start line.
    func server(connectedTo process: NotifyProcess, line: String) -> NATSServerProcess? {
        guard let text = process.output.split(separator: "\n").first(where: { $0.contains(line) }),
              let range = text.range(of: "nats=")
        else { return nil }
        let url = text[range.upperBound...].prefix { !$0.isWhitespace }
        return servers.first { $0.url == url }
    }

    /// Nothing pending or unacknowledged in the consumer and no outbox
    /// left, or the last state at the timeout.
    func waitUntilDrained(timeout: Duration) async -> DrainState {
        let deadline = ContinuousClock.now + timeout
        var state = DrainState(pending: nil, ackPending: nil, outboxRows: nil)
        while true {
            let info = try? await jetStream.consumerInfo(stream: Harness.stream, name: Harness.consumer)
            let outbox = try? await store.query(Query(partition: "OUTBOX", limit: 100)).items.count
            state = DrainState(pending: info?.numPending, ackPending: info?.numAckPending, outboxRows: outbox)
            if state.isDrained || ContinuousClock.now >= deadline { return state }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    func shutdown(keep: Bool) async {
        for process in started.withLock({ $0 }) where process.isRunning {
            process.signal(SIGKILL)
            _ = await process.waitForExit()
        }
        await connection.close()
        for server in servers { server.stop() }
        emulator.stop()
        if keep {
            progress("cluster: kept \(directory)")
        } else {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}

/// The checks of `make cluster-test`, run in a ``ClusterWorld``.
enum ClusterTest {
    static func fault(events: Int) -> String {
        "3-node NATS cluster (stream R3), DynamoDB (moto), 2 workers, 2 gateways; \(events) events; one NATS node and one worker SIGKILLed mid-load"
    }

    /// Runs the scenario and returns its checks.
    static func run(events count: Int, owners: Int, keep: Bool) async -> [Check] {
        let fault = fault(events: count)
        progress("=== cluster: \(fault)")
        let started = ContinuousClock.now
        var checks = Checks(fault: fault)
        let world: ClusterWorld
        do {
            world = try await ClusterWorld.start(name: "cluster")
        } catch {
            checks.add("the scenario runs", "could not start: \(error)", false)
            return checks.rows
        }
        do {
            try await scenario(world, events: count, owners: owners, &checks)
        } catch {
            checks.add("the scenario runs to the end", "stopped by: \(error)", false)
        }
        await world.shutdown(keep: keep || !checks.passed)
        progress("=== cluster done in \(Int(seconds(ContinuousClock.now - started))) s: \(checks.passed ? "PASS" : "FAIL")")
        return checks.rows
    }

    static func scenario(_ world: ClusterWorld, events count: Int, owners: Int, _ checks: inout Checks) async throws {
        let (n2, n3) = (world.servers[1].url, world.servers[2].url)
        let metricsA = try LoopbackSocket.freePort(), metricsB = try LoopbackSocket.freePort()
        // Both workers start together: one creates the replicated stream
        // while the other waits for the cluster to answer.
        let workerA = try world.startNotify("worker", log: "worker-a.log", urls: [n2, n3], extra: ["METRICS_PORT": String(metricsA), "NATS_ACK_WAIT": "10s"])
        let workerB = try world.startNotify("worker", log: "worker-b.log", urls: [n3, n2], extra: ["METRICS_PORT": String(metricsB), "NATS_ACK_WAIT": "10s"])
        let gatewayA = try world.startNotify("gateway", log: "gateway-a.log", urls: [n3, n2])
        let gatewayB = try world.startNotify("gateway", log: "gateway-b.log", urls: [n2, n3])
        try await workerA.waitForOutput(containing: "worker running", timeout: .seconds(90))
        try await workerB.waitForOutput(containing: "worker running", timeout: .seconds(90))
        let portA = try await gatewayA.waitForPort(), portB = try await gatewayB.waitForPort()
        let replicas = try await world.jetStream.streamInfo(Harness.stream)?.replicas ?? 0
        checks.add("the worker created the event stream with 3 replicas (NATS_STREAM_REPLICAS=3)", "stream \(Harness.stream): \(replicas) replicas", replicas == 3)

        // Two clients per user, one on each gateway, as two devices would be.
        let users = (0..<owners).map { "u\($0)" }
        let clientsA = users.map { FeedClient(user: $0, token: Tokens.valid(user: $0)) }
        let clientsB = users.map { FeedClient(user: $0, token: Tokens.valid(user: $0)) }
        let clientTasks = clientsA.map { client in Task { await client.run(port: portA) } }
            + clientsB.map { client in Task { await client.run(port: portB) } }
        let connected = await waitFor(timeout: .seconds(60)) { (clientsA + clientsB).allSatisfy { $0.snapshot.hellos > 0 } ? true : nil } ?? false
        guard connected else { throw ChaosError("not every client received hello within 60 s") }
        let recorder = try await SubjectRecorder(world.connection, subject: "users.*.notifications")

        var mix = EventMix(owners: owners, prefix: "u")
        let events = (0..<count).map { _ in mix.next() }
        let log = PublishLog()
        let jetStream = world.jetStream
        progress("publishing \(count) events over \(owners) users, 50 every 100 ms")
        let publisher = Task { await publishInBursts(events, jetStream: jetStream, log: log, burst: 50, interval: .milliseconds(100)) }

        // The NATS node most of the survivors (worker B, both gateways) are on.
        let survivors = [("worker B", workerB, "worker running"), ("gateway A", gatewayA, "gateway listening"), ("gateway B", gatewayB, "gateway listening")]
        let placement = survivors.map { (name: $0.0, process: $0.1, server: world.server(connectedTo: $0.1, line: $0.2)) }
        let target = [world.servers[1], world.servers[2]].max { a, b in
            placement.filter { $0.server?.port == a.port }.count < placement.filter { $0.server?.port == b.port }.count
        }!
        let onTarget = placement.filter { $0.server?.port == target.port }
        _ = await waitFor(timeout: .seconds(600)) { log.acknowledged.count >= count * 3 / 10 ? true : nil }
        target.signal(SIGKILL)
        _ = await target.waitForExit()
        let killedNodeAt = log.acknowledged.count
        progress("SIGKILL nats-server \(target.port) at \(killedNodeAt) events; on it: \(onTarget.map(\.name).joined(separator: ", "))")

        var receivedByA = 0
        _ = await waitFor(timeout: .seconds(600)) { log.acknowledged.count >= count / 2 ? true : nil }
        receivedByA = await receivedEvents(metricsPort: metricsA) ?? 0
        workerA.signal(SIGKILL)
        _ = await workerA.waitForExit()
        let killedWorkerAt = log.acknowledged.count
        // Messages arriving from here on were published by worker B: A is dead.
        try await Task.sleep(for: .seconds(1))
        let fromBStart = recorder.count
        progress("SIGKILL worker A at \(killedWorkerAt) events (it had received \(receivedByA))")

        await publisher.value
        let drained = await world.waitUntilDrained(timeout: .seconds(900))
        let receivedByB = await receivedEvents(metricsPort: metricsB) ?? 0
        try await Task.sleep(for: .seconds(3))

        checks.add("the faults took effect", "nats-server \(target.port) SIGKILLed after \(killedNodeAt) acked publishes (on it: \(onTarget.map(\.name).joined(separator: ", "))); worker A SIGKILLed after \(killedWorkerAt); \(log.failed.count) publishes failed (\(log.lastError ?? "none"))",
                   !target.process.isRunning && !workerA.isRunning && !onTarget.isEmpty)
        let reconnected = onTarget.filter { $0.process.output.contains("NATS reconnected") }
        let running = [workerB, gatewayA, gatewayB].allSatisfy(\.isRunning)
        checks.add("processes on the killed node reconnect to another node and keep working",
                   "\(reconnected.count)/\(onTarget.count) logged \"NATS reconnected\" (\(reconnected.map(\.name).joined(separator: ", "))); worker B and both gateways running: \(running)",
                   reconnected.count == onTarget.count && running)
        checks.add("both workers did work (notify_events_received_total)", "worker A \(receivedByA) before its kill, worker B \(receivedByB)", receivedByA > 0 && receivedByB > 0)

        // Created messages worker B published once A was dead, per user.
        let tallyFromB = UserMessageTally(Array(recorder.received.dropFirst(fromBStart)))
        let fromB = Set(tallyFromB.created.keys)
        let seenOnA = clientsA.reduce(0) { $0 + Set($1.snapshot.created).intersection(fromB).count }
        checks.add("clients on gateway A received notifications that worker B stored and published",
                   "\(fromB.count) created after worker A died; \(seenOnA) of them received by clients on gateway A", seenOnA > 0)

        // A retraction while a client was away is not replayed (a resume
        // replays live notifications only): such a notification may stay
        // on the client, but only if it was deleted.
        let deletedAnywhere = UserMessageTally(recorder.received).deleted
        var mismatches: [String] = []
        var duplicates = 0, received = 0, resumes = 0
        for (client, port) in clientsA.map({ ($0, portB) }) + clientsB.map({ ($0, portA) }) {
            // The feed through the other gateway; frames still on their way get a few seconds.
            var feed = try await GatewayCrashes.feedIDs(port: port, user: client.user)
            let deadline = ContinuousClock.now + .seconds(10)
            while !feed.isSubset(of: client.snapshot.created), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(500))
                feed = try await GatewayCrashes.feedIDs(port: port, user: client.user)
            }
            let state = client.snapshot
            duplicates += state.duplicates
            received += state.created.count
            resumes += max(state.hellos - 1, 0)
            let shown = Set(state.created).subtracting(state.deleted)
            let missing = feed.subtracting(shown)
            let extra = shown.subtracting(feed).filter { state.hellos == 1 || !deletedAnywhere.contains($0) }
            if !missing.isEmpty || !extra.isEmpty {
                let lines = ["feed not shown: " + missing.sorted().joined(separator: " "), "shown, not in the feed: " + extra.sorted().joined(separator: " "), "feed: " + feed.sorted().joined(separator: " ")] + state.trace
                try? lines.joined(separator: "\n").write(toFile: "\(world.directory)/client-\(client.user)-\(port).trace", atomically: false, encoding: .utf8)
                mismatches.append("\(client.user): \(missing.count) in the feed not shown, \(extra.count) shown not in the feed")
            }
        }
        for client in clientsA + clientsB { client.stop() }
        for task in clientTasks { await task.value }
        checks.add("each client shows exactly its feed read through the other gateway (created minus deleted frames; after a resume, a retraction missed while away may stay); no duplicate",
                   "\(clientsA.count + clientsB.count - mismatches.count)/\(clientsA.count + clientsB.count) equal, \(received) notifications received, \(resumes) resumes after the gateways' NATS reconnects\(mismatches.isEmpty ? "" : "; " + mismatches.prefix(3).joined(separator: "; ")); \(duplicates) duplicates",
                   mismatches.isEmpty && duplicates == 0)

        writeEventLog(events, log, to: world.directory)
        let snapshot = try await StoreInspector.snapshot(world.store, owners: users)
        let failed = log.failed.reduce(into: [String: Set<String>]()) { $0[events[$1].owner, default: []].insert(events[$1].actionKey) }
        checks.checkStore(snapshot, expected: Oracle.expected(events, acknowledged: log.acknowledged), allowed: failed)
        recorder.stop()
        checks.checkPublished(snapshot, UserMessageTally(recorder.received), dropped: recorder.dropped)
        checks.add("drains: consumer num_pending 0 and num_ack_pending 0, outbox empty", drained.description, drained.isDrained)
    }

    /// `notify_events_received_total` from a worker's `/metrics`.
    static func receivedEvents(metricsPort: Int) async -> Int? {
        guard let reply = try? await HTTPProbe.request(port: metricsPort, path: "/metrics"), reply.status == 200 else { return nil }
        let text = String(decoding: reply.body, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("notify_events_received_total") }) else { return nil }
        return line.split(separator: " ").last.flatMap { Double($0) }.map { Int($0) }
    }
}
