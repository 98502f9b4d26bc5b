import Foundation
import NATS
import Synchronization

/// The nats-server the benchmark runs against (JetStream, file storage).
struct Server {
    let process: Process
    let port: Int

    static func start(directory: String) async throws -> Server {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin"]
        guard let executable = path.map({ $0 + "/nats-server" }).first(where: FileManager.default.isExecutableFile(atPath:)) else {
            throw BenchmarkError("nats-server is not installed (apt-get install nats-server)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let log = directory + "/nats.log"
        process.arguments = ["-js", "-a", "127.0.0.1", "-p", "-1", "-sd", directory + "/jetstream", "-l", log]
        try process.run()
        for _ in 0..<200 {
            if let text = try? String(contentsOfFile: log, encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.contains("Listening for client connections on") }),
               let port = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) {
                return Server(process: process, port: port)
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        process.terminate()
        throw BenchmarkError("nats-server did not start; see \(log)")
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

/// The release `notify worker` under test.
struct Worker {
    let process: Process
    let log: String

    static func start(
        url: String, directory: String, synchronous: String, batchSize: Int, command: String = "worker", extra: [String: String] = [:]
    ) throws -> Worker {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("notify").path
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw BenchmarkError("\(executable) is missing: build it with `swift build -c release --product notify`")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [command]
        var environment = ProcessInfo.processInfo.environment
        environment["NATS_URL"] = url
        environment["DATA_DIR"] = directory + "/data"
        environment["SQLITE_SYNCHRONOUS"] = synchronous
        environment["WORKER_BATCH_SIZE"] = String(batchSize)
        environment["LOG_LEVEL"] = "info"
        environment["ENVIRONMENT"] = "development"
        environment.merge(extra) { _, new in new }
        process.environment = environment
        let log = directory + "/worker.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return Worker(process: process, log: log)
    }

    func waitUntilRunning() async throws {
        for _ in 0..<400 {
            if let text = try? String(contentsOfFile: log, encoding: .utf8), text.contains("worker running") { return }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw BenchmarkError("the worker did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    /// The gateway's port, from its "gateway listening" log line.
    func waitForPort() async throws -> Int {
        for _ in 0..<400 {
            if let text = try? String(contentsOfFile: log, encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.contains("gateway listening") }),
               let range = line.range(of: "port="),
               let port = Int(line[range.upperBound...].prefix { $0.isNumber }) {
                return port
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw BenchmarkError("the gateway did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    /// VmRSS of the process now, in KiB.
    func currentRSSKiB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kib
    }

    /// VmHWM of the worker process, in MiB.
    func peakRSSMiB() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return (kib / 1024 * 10).rounded() / 10
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}

/// Counts per-user messages and, in the latency phase, measures each one's
/// delay from the send time it carries.
final class Receiver: Sendable {
    private struct State {
        var count = 0
        var last = ContinuousClock.now
        var origin: ContinuousClock.Instant?
        var latencies: [Double] = []
    }

    private let box: StateBox
    private let task: Task<Void, Never>
    private let subscription: NATSSubscription

    init(_ subscription: NATSSubscription) {
        self.subscription = subscription
        let box = StateBox()
        self.box = box
        task = Task {
            while !Task.isCancelled {
                let batch = await subscription.nextBatch(max: 4_096)
                if batch.isEmpty { return }
                let now = ContinuousClock.now
                box.record(batch, at: now)
            }
        }
    }

    private final class StateBox: Sendable {
        let state = Mutex(State())

        func record(_ batch: [NATSMessage], at now: ContinuousClock.Instant) {
            state.withLock { state in
                state.count += batch.count
                state.last = now
                guard let origin = state.origin else { return }
                let nowNanos = nanoseconds(since: origin, at: now)
                for message in batch {
                    guard let sent = sentNanoseconds(in: message.payload) else { continue }
                    state.latencies.append((nowNanos - sent) / 1e6)
                }
            }
        }
    }

    func trackLatency(origin: ContinuousClock.Instant) {
        box.state.withLock { $0.origin = origin; $0.latencies = [] }
    }

    /// Waits for `count` messages in all; returns how many came and when the last did.
    func wait(for count: Int, timeout: Duration) async -> (Int, ContinuousClock.Instant) {
        let deadline = ContinuousClock.now + timeout
        var idleSince = ContinuousClock.now
        var seen = 0
        while ContinuousClock.now < deadline {
            let (current, last) = box.state.withLock { ($0.count, $0.last) }
            if current >= count { return (current, last) }
            if current != seen { seen = current; idleSince = ContinuousClock.now }
            if ContinuousClock.now - idleSince > .seconds(20) { return (current, last) }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return box.state.withLock { ($0.count, $0.last) }
    }

    func latencies(count: Int, timeout: Duration) async -> [Double] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if box.state.withLock({ $0.latencies.count }) >= count { break }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return box.state.withLock { $0.latencies }
    }

    func stop() {
        subscription.unsubscribe()
        task.cancel()
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
