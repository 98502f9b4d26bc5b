import Foundation
import Gateway
import HummingbirdWSClient
import Logging
import NATS
import NIOWebSocket
import ProcessSupport
import Synchronization

/// `--gateway true`: the release `notify serve` as its own process; the
/// benchmark opens `users` authenticated WebSockets, measures the connect
/// rate and the gateway's memory per idle connection, then publishes at a
/// fixed rate spread over those users and measures publish → frame latency.
enum GatewayBenchmark {
    static let secret = "benchmark-secret-of-at-least-32-bytes"

    static func run(_ options: Benchmark.Options, server: NATSServerProcess, directory: String) async throws -> [String: Any] {
        let url = "nats://127.0.0.1:\(server.port)"
        let serve = try NotifyProcess.start(url: url, directory: directory, synchronous: options.synchronous, batchSize: options.batchSize,
                                     command: "serve", extra: ["JWT_SECRET": secret, "PORT": "0", "HOST": "127.0.0.1"])
        defer { serve.stop() }
        let port = try await serve.waitForPort()
        try await Task.sleep(for: .milliseconds(500))
        let baseline = serve.currentRSSKiB()
        progress("gateway on port \(port), RSS \(baseline) KiB before connections")

        // Connect every user; each client counts frames and keeps latencies.
        let users = options.users
        let recorder = LatencyRecorder()
        let verifier = TokenVerifier(secret: secret)
        let expires = Int64(Date().timeIntervalSince1970) + 3_600
        let connected = SharedCount()
        let clock = ContinuousClock()
        let connectStart = clock.now
        var clients: [Task<Void, Never>] = []
        clients.reserveCapacity(users)
        let (stop, stopContinuation) = AsyncStream.makeStream(of: Void.self)
        let stopSignal = StopSignal(stream: stop)
        var logger = Logger(label: "bench-ws")
        logger.logLevel = .critical
        for index in 0..<users {
            let token = verifier.sign(user: "user\(index)", expiresAt: expires)
            clients.append(Task { [logger] in
                _ = try? await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/ws?access_token=\(token)", logger: logger) { inbound, outbound, _ in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            var first = true
                            for try await message in inbound.messages(maxSize: 1 << 16) {
                                guard case .text(let text) = message else { continue }
                                if first {
                                    first = false
                                    connected.increment()
                                } else {
                                    recorder.record(text)
                                }
                            }
                        }
                        group.addTask {
                            await stopSignal.wait()
                            try await outbound.close(.normalClosure, reason: nil)
                        }
                        try await group.next()
                        group.cancelAll()
                    }
                }
            })
            // Keep a bounded number of handshakes in flight.
            while index - connected.value > 200 { try await Task.sleep(for: .milliseconds(1)) }
        }
        while connected.value < users, clock.now - connectStart < .seconds(120) {
            try await Task.sleep(for: .milliseconds(10))
        }
        let connectSeconds = seconds(clock.now - connectStart)
        let open = connected.value
        try await Task.sleep(for: .seconds(2))
        let withConnections = serve.currentRSSKiB()
        let perConnection = Double(withConnections - baseline) / Double(max(open, 1))
        progress(String(format: "%d/%d WebSockets in %.2f s (%.0f/s); gateway RSS %d KiB, %.1f KiB per idle connection",
                        open, users, connectSeconds, Double(open) / connectSeconds, withConnections, perConnection))

        // Fan-out: publish at a fixed rate, one event per user in turn, each
        // sent at once (as in the worker benchmark's latency phase).
        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [url], sendImmediately: true))
        let publisher = try JetStreamAsyncPublisher(connection: connection)
        let total = options.latencyRate * options.latencySeconds
        let origin = clock.now
        recorder.start(origin: origin)
        progress("publishing \(total) events at \(options.latencyRate)/s over \(open) connected users")
        try await publishTimed(count: total, rate: options.latencyRate, origin: origin, publisher: publisher) { index in
            (owner: "user\(index % users)", trigger: "fan\(index)")
        }
        let latencies = await recorder.latencies(count: total, timeout: .seconds(60))
        progress("fan-out latency at \(options.latencyRate)/s: p50 \(percentile(latencies, 0.5)) ms, p99 \(percentile(latencies, 0.99)) ms (\(latencies.count)/\(total) frames)")
        let peak = serve.peakRSSMiB()
        stopContinuation.finish()
        for client in clients { _ = await client.value }
        await connection.close()
        return [
            "mode": "gateway",
            "websockets": open,
            "connect_seconds": (connectSeconds * 100).rounded() / 100,
            "connects_per_second": Int(Double(open) / connectSeconds),
            "rss_per_idle_connection_kib": (perConnection * 10).rounded() / 10,
            "gateway_rss_mib": Double(withConnections / 1024),
            "fanout_rate_per_second": options.latencyRate,
            "fanout_samples": latencies.count,
            "fanout_latency_ms": ["p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99), "max": latencies.max() ?? 0],
            "serve_peak_rss_mib": peak,
            "cores": ProcessInfo.processInfo.activeProcessorCount,
        ]
    }
}

/// A counter shared by many tasks.
final class SharedCount: Sendable {
    private let count = Atomic<Int>(0)
    func increment() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

/// Lets every client wait for the end of the run without a task each.
final class StopSignal: Sendable {
    private let stream: AsyncStream<Void>
    private let finished = Mutex(false)
    private let waiters = Mutex<[CheckedContinuation<Void, Never>]>([])

    init(stream: AsyncStream<Void>) {
        self.stream = stream
        Task { [self] in
            for await _ in stream {}
            finished.withLock { $0 = true }
            for waiter in waiters.withLock({ list -> [CheckedContinuation<Void, Never>] in defer { list = [] }; return list }) {
                waiter.resume()
            }
        }
    }

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = finished.withLock { $0 }
            if done { continuation.resume(); return }
            waiters.withLock { $0.append(continuation) }
            if finished.withLock({ $0 }) {
                // Finished meanwhile: make sure nobody is left waiting.
                for waiter in waiters.withLock({ list -> [CheckedContinuation<Void, Never>] in defer { list = [] }; return list }) {
                    waiter.resume()
                }
            }
        }
    }
}

/// Latencies of frames that carry their send time (`"resource_id":"lat-<ns>"`).
final class LatencyRecorder: Sendable {
    private struct State {
        var origin: ContinuousClock.Instant?
        var latencies: [Double] = []
    }

    private let state = Mutex(State())

    func start(origin: ContinuousClock.Instant) {
        state.withLock { $0.origin = origin; $0.latencies = [] }
    }

    func record(_ text: String) {
        let now = ContinuousClock.now
        guard let sent = sentNanoseconds(in: Array(text.utf8)) else { return }
        state.withLock { state in
            guard let origin = state.origin else { return }
            state.latencies.append((nanoseconds(since: origin, at: now) - sent) / 1e6)
        }
    }

    func latencies(count: Int, timeout: Duration) async -> [Double] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, state.withLock({ $0.latencies.count }) < count {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return state.withLock { $0.latencies }
    }
}
