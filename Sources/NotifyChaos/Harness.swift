import Foundation
import NATS
import ProcessSupport
import Synchronization

/// One scenario's world: a directory `/tmp/chaos-<name>-…`, a nats-server
/// with JetStream, the `notify` processes started in it, and a NATS
/// connection of the suite's own for publishing and observing.
final class Harness: Sendable {
    static let secret = "chaos-suite-jwt-secret-of-at-least-32-bytes"
    static let stream = "NOTIFICATIONS"
    static let consumer = "notification-worker"

    let name: String
    let directory: String
    let connection: NATSConnection
    let jetStream: JetStream
    private let currentServer: Mutex<NATSServerProcess>
    private let started = Mutex<[NotifyProcess]>([])
    private let logSequence = Atomic<Int>(0)

    var dataDirectory: String { directory + "/data" }
    var databasePath: String { dataDirectory + "/notify.sqlite" }
    var server: NATSServerProcess { currentServer.withLock { $0 } }

    private init(name: String, directory: String, server: NATSServerProcess, connection: NATSConnection, jetStream: JetStream) {
        self.name = name
        self.directory = directory
        self.currentServer = Mutex(server)
        self.connection = connection
        self.jetStream = jetStream
    }

    /// Creates the directory, starts nats-server and connects.
    /// - Parameter requestTimeout: how long a JetStream publish waits for its ack.
    static func start(name: String, requestTimeout: Duration = .seconds(5)) async throws -> Harness {
        let directory = "/tmp/chaos-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let server = try await NATSServerProcess.start(directory: directory, logName: "nats-1.log")
        let connection = try await NATSConnection.connect(NATSConnectionOptions(
            urls: [server.url], name: "chaos", minReconnectDelay: .milliseconds(100), maxReconnectDelay: .milliseconds(500)))
        let jetStream = try JetStream(connection: connection, requestTimeout: requestTimeout)
        progress("\(name): nats-server on port \(server.port), files in \(directory)")
        return Harness(name: name, directory: directory, server: server, connection: connection, jetStream: jetStream)
    }

    /// The environment of every `notify` process of this scenario.
    func environment(_ extra: [String: String] = [:]) -> [String: String] {
        [
            "NATS_URL": server.url, "DATA_DIR": dataDirectory, "LOG_LEVEL": "info", "ENVIRONMENT": "development",
            "JWT_SECRET": Self.secret, "HOST": "127.0.0.1", "PORT": "0",
            // The scenarios' oracles expect one notification per action key
            // (follows of one user would fold); aggregation has its own tests.
            "AGGREGATE_WINDOW": "0",
        ].merging(extra) { _, new in new }
    }

    /// Starts `notify <command>` and, when `wait`, waits until it runs:
    /// "worker running" for a worker, the listening line for a gateway.
    func startNotify(_ command: String, extra: [String: String] = [:], wait: Bool = true) async throws -> NotifyProcess {
        let sequence = logSequence.add(1, ordering: .relaxed).newValue
        let process = try NotifyProcess.start(command: command, environment: environment(extra), log: "\(directory)/\(command)-\(sequence).log")
        started.withLock { $0.append(process) }
        if !wait { return process }
        if command == "worker" {
            try await process.waitUntilRunning()
        } else {
            _ = try await process.waitForPort()
        }
        return process
    }

    /// A new nats-server on the same port with the same data, after the
    /// current one has exited.
    @discardableResult
    func restartServer() async throws -> NATSServerProcess {
        let sequence = logSequence.add(1, ordering: .relaxed).newValue
        let next = try await server.restarted(logName: "nats-\(sequence).log")
        currentServer.withLock { $0 = next }
        return next
    }

    /// The worker's consumer as the server sees it; `nil` when unreachable.
    func consumerInfo() async -> ConsumerInfo? {
        try? await jetStream.consumerInfo(stream: Self.stream, name: Self.consumer)
    }

    /// Waits until the consumer has nothing pending or unacknowledged and
    /// the outbox is empty, or the timeout passes; returns the last state.
    func waitUntilDrained(timeout: Duration = .seconds(60)) async -> DrainState {
        let deadline = ContinuousClock.now + timeout
        var state = DrainState(pending: nil, ackPending: nil, outboxRows: nil)
        while true {
            let info = await consumerInfo()
            state = DrainState(pending: info?.numPending, ackPending: info?.numAckPending, outboxRows: try? StoreInspector.outboxRows(databasePath))
            if state.isDrained || ContinuousClock.now >= deadline { return state }
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Stops everything this scenario started; removes the directory unless `keep`.
    func shutdown(keep: Bool) async {
        for process in started.withLock({ $0 }) where process.isRunning {
            process.signal(SIGCONT)
            process.signal(SIGKILL)
            _ = await process.waitForExit()
        }
        await connection.close()
        server.signal(SIGCONT)
        server.stop()
        if keep {
            progress("\(name): kept \(directory)")
        } else {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}

/// The worker's backlog: JetStream consumer and store outbox.
struct DrainState: Sendable, CustomStringConvertible {
    let pending: UInt64?
    let ackPending: Int64?
    let outboxRows: Int?

    var isDrained: Bool { pending == 0 && ackPending == 0 && outboxRows == 0 }

    var description: String {
        "num_pending \(pending.map(String.init) ?? "?"), num_ack_pending \(ackPending.map(String.init) ?? "?"), outbox rows \(outboxRows.map(String.init) ?? "?")"
    }
}

/// Sleeps a random time in `range` (seconds).
func sleepRandom(_ range: ClosedRange<Double>) async {
    try? await Task.sleep(for: .milliseconds(Int(Double.random(in: range) * 1000)))
}
