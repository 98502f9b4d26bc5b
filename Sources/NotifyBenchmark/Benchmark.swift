import Foundation
import NATS
import ProcessSupport

/// `make bench`: end-to-end throughput and latency of the worker, as a
/// separate `notify worker` process against its own nats-server, printed
/// as one line of JSON. Progress goes to stderr.
@main
struct Benchmark {
    struct Options {
        var events = 200_000
        var owners = 1_000
        var latencyRate = 2_000
        var latencySeconds = 10
        var synchronous = "full"
        var batchSize = 1_024
        var keep = false
        var storeOnly = false
        var natsURL: String?
        var gateway = false
        var users = 10_000
        var workers = 1
        var cluster = false
        /// `AGGREGATE_WINDOW` of the workers.
        var aggregateWindow = "1h"
        /// Posts per owner that likes go to (0: a post per like).
        var postsPerOwner = 0
        /// `--feed true`: feed page reads through the gateway (``FeedBenchmark``).
        var feed = false
        /// Notifications stored for the feed reads.
        var notifications = 1_000_000
        /// Owners the feed's notifications are spread over.
        var feedOwners = 10_000
        /// Feed page requests measured.
        var requests = 20_000

        init(_ arguments: [String]) {
            var iterator = arguments.dropFirst().makeIterator()
            while let flag = iterator.next() {
                let value = iterator.next() ?? ""
                switch flag {
                case "--events": events = Int(value) ?? events
                case "--owners": owners = Int(value) ?? owners
                case "--rate": latencyRate = Int(value) ?? latencyRate
                case "--seconds": latencySeconds = Int(value) ?? latencySeconds
                case "--synchronous": synchronous = value
                case "--batch-size": batchSize = Int(value) ?? batchSize
                case "--keep": keep = value == "true"
                case "--store-only": storeOnly = value == "true"
                case "--nats-url": natsURL = value
                case "--gateway": gateway = value == "true"
                case "--users": users = Int(value) ?? users
                case "--workers": workers = max(1, Int(value) ?? workers)
                case "--cluster": cluster = value == "true"
                case "--aggregate-window": aggregateWindow = value
                case "--posts-per-owner": postsPerOwner = max(0, Int(value) ?? 0)
                case "--feed": feed = value == "true"
                case "--notifications": notifications = Int(value) ?? notifications
                case "--feed-owners": feedOwners = Int(value) ?? feedOwners
                case "--requests": requests = Int(value) ?? requests
                default:
                    FileHandle.standardError.write(Data("usage: NotifyBenchmark [--events N] [--owners N] [--rate N] [--seconds N] [--synchronous full|normal] [--batch-size N] [--keep true] [--store-only true] [--nats-url URL] [--gateway true] [--users N] [--workers N] [--cluster true] [--aggregate-window 0|1h] [--posts-per-owner N] [--feed true] [--notifications N] [--feed-owners N] [--requests N]\n".utf8))
                    exit(2)
                }
            }
        }
    }

    static func main() async {
        do {
            try await measure(Options(CommandLine.arguments))
        } catch {
            progress("error: \(error)")
            exit(1)
        }
    }

    static func measure(_ options: Options) async throws {
        let workDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("notify-bench-\(getpid())")
        try FileManager.default.createDirectory(at: workDirectory, withIntermediateDirectories: true)
        defer {
            if options.keep {
                progress("kept \(workDirectory.path) (worker.log, nats.log, data/)")
            } else {
                try? FileManager.default.removeItem(at: workDirectory)
            }
        }

        if let url = options.natsURL {
            try await publishOnly(options, url: url)
            NATSLibrary.shutdown()
            return
        }
        if options.storeOnly {
            let result = try await StoreBenchmark.run(options, directory: workDirectory.path)
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if options.cluster {
            let result = try await ClusterBenchmark.run(options, directory: workDirectory.path)
            NATSLibrary.shutdown()
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let server = try await NATSServerProcess.start(directory: workDirectory.path)
        defer { server.stop() }
        progress("nats-server on port \(server.port)")
        if options.gateway {
            raiseFileLimit()
            let result = try await GatewayBenchmark.run(options, server: server, directory: workDirectory.path)
            NATSLibrary.shutdown()
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if options.feed {
            let result = try await FeedBenchmark.run(options, server: server, directory: workDirectory.path)
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        var result: [String: Any] = [:]
        try await run(options, server: server, directory: workDirectory.path, result: &result)
        NATSLibrary.shutdown()
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }

    static func run(_ options: Options, server: NATSServerProcess, directory: String, result: inout [String: Any]) async throws {
        let url = "nats://127.0.0.1:\(server.port)"
        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [url]))
        let users = try connection.subscribe("users.>", bufferLimit: 4_000_000)
        try await connection.flush()

        let workers = try (1...options.workers).map { index in
            try NotifyProcess.start(
                url: url, directory: directory, synchronous: options.synchronous, batchSize: options.batchSize,
                extra: ["AGGREGATE_WINDOW": options.aggregateWindow],
                log: options.workers == 1 ? "worker.log" : "worker-\(index).log")
        }
        defer { workers.forEach { $0.stop() } }
        for worker in workers { try await worker.waitUntilRunning() }
        let jetStream = try JetStream(connection: connection)

        // Phase 1: the mixed workload as fast as JetStream takes it.
        let receiver = Receiver(users)
        try await throughput(options, connection: connection, receiver: receiver, timeout: .seconds(600), result: &result)
        result["worker_cpu_ms_per_event"] = cpuMillisecondsPerEvent(workers.map { $0.cpuSeconds() }, events: options.events)
        result["nats_cpu_ms_per_event"] = cpuMillisecondsPerEvent([server.cpuSeconds()], events: options.events)
        result["consumer_drained"] = try await waitUntilDrained(jetStream)

        // Phase 2: latency at a fixed rate, published as a latency-minded
        // producer would: each event sent at once, not held by nats.c for
        // up to a millisecond to be batched with the next.
        let immediate = try await NATSConnection.connect(NATSConnectionOptions(urls: [url], sendImmediately: true))
        let paced = try JetStreamAsyncPublisher(connection: immediate, maxPending: 8_192)
        let latencies = try await measureLatency(rate: options.latencyRate, seconds: options.latencySeconds, publisher: paced, users: receiver)
        await immediate.close()
        result["latency_rate_per_second"] = options.latencyRate
        result["latency_samples"] = latencies.count
        result["latency_ms"] = [
            "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99), "max": latencies.max() ?? 0,
        ]
        progress("latency at \(options.latencyRate)/s: p50 \(percentile(latencies, 0.5)) ms, p99 \(percentile(latencies, 0.99)) ms, max \(latencies.max() ?? 0) ms")

        result["worker_peak_rss_mib"] = workers.map { $0.peakRSSMiB() }.max() ?? 0
        result["workers"] = options.workers
        result["sqlite_synchronous"] = options.synchronous
        result["enrichment"] = enrichmentInEnvironment()
        result["batch_size"] = options.batchSize
        result["owners"] = options.owners
        result["cores"] = ProcessInfo.processInfo.activeProcessorCount
        receiver.stop()
        await connection.close()
    }

    /// Publishes the mixed workload as fast as JetStream takes it and waits
    /// for every per-user message; records events/s and the counts.
    static func throughput(
        _ options: Options, connection: NATSConnection, receiver: Receiver, timeout: Duration, result: inout [String: Any]
    ) async throws {
        var workload = Workload(owners: options.owners, postsPerOwner: options.postsPerOwner, seed: 42)
        let messages = (0..<options.events).map { _ in workload.next() }
        let expected = workload.expectedUserMessages
        progress("publishing \(options.events) events (\(expected) per-user messages expected) to \(options.workers) worker(s)")
        let publisher = try JetStreamAsyncPublisher(connection: connection, maxPending: 8_192)
        let started = ContinuousClock.now
        for chunk in stride(from: 0, to: messages.count, by: 4_096) {
            try await publisher.publish(Array(messages[chunk..<min(chunk + 4_096, messages.count)]))
        }
        try await publisher.waitForAcks(timeout: .seconds(120))
        let published = ContinuousClock.now - started
        progress("published in \(published), \(publisher.failureCount) failures")
        let (received, last) = await receiver.wait(for: expected, timeout: timeout)
        let elapsed = last - started
        let throughput = Double(options.events) / seconds(elapsed)
        progress(String(format: "throughput: %d events in %.2f s = %.0f events/s (%d/%d per-user messages)", options.events, seconds(elapsed), throughput, received, expected))
        result["events"] = options.events
        result["events_per_second"] = Int(throughput)
        result["publish_seconds"] = round(seconds(published) * 100) / 100
        result["user_messages_expected"] = expected
        result["user_messages_received"] = received
        result["aggregate_window"] = options.aggregateWindow
        result["posts_per_owner"] = options.postsPerOwner
        // With aggregation, several likes share one notification.
        if ["0", "0s"].contains(options.aggregateWindow) { result["notifications_expected"] = workload.expectedLiveNotifications }
    }

    /// CPU milliseconds per event over `processes` (their CPU seconds so far).
    static func cpuMillisecondsPerEvent(_ processes: [Double?], events: Int) -> Double {
        (processes.reduce(0) { $0 + ($1 ?? 0) } * 1_000 / Double(max(events, 1)) * 1_000).rounded() / 1_000
    }

    /// Publishes the workload to a server where a worker already runs, and
    /// waits until the worker has taken and acknowledged all of it (used by
    /// `make leak-check`).
    static func publishOnly(_ options: Options, url: String) async throws {
        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [url]))
        let jetStream = try JetStream(connection: connection)
        var workload = Workload(owners: options.owners, seed: 7)
        let publisher = try JetStreamAsyncPublisher(connection: connection, maxPending: 8_192)
        progress("publishing \(options.events) events to \(url)")
        var sent = 0
        while sent < options.events {
            let count = min(4_096, options.events - sent)
            try await publisher.publish((0..<count).map { _ in workload.next() })
            sent += count
        }
        try await publisher.waitForAcks(timeout: .seconds(120))
        var drained = false
        for _ in 0..<6_000 {
            if let info = try await jetStream.consumerInfo(stream: "NOTIFICATIONS", name: "notification-worker"),
               info.numPending == 0, info.numAckPending == 0 {
                drained = true
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        await connection.close()
        print(#"{"published":\#(sent),"failures":\#(publisher.failureCount),"drained":\#(drained)}"#)
        guard drained, publisher.failureCount == 0 else { throw BenchmarkError("the worker did not take every event") }
    }

    /// Publishes `rate` events per second for `seconds`, each carrying its
    /// send time, and measures until its per-user message arrives.
    static func measureLatency(rate: Int, seconds duration: Int, publisher: JetStreamAsyncPublisher, users: Receiver) async throws -> [Double] {
        let total = rate * duration
        let origin = ContinuousClock.now
        users.trackLatency(origin: origin)
        progress("publishing \(total) events at \(rate)/s")
        try await publishTimed(count: total, rate: rate, origin: origin, publisher: publisher) { index in
            (owner: "lat\(index % 1_000)", trigger: "t\(index)")
        }
        return await users.latencies(count: total, timeout: .seconds(60))
    }

    static func waitUntilDrained(_ jetStream: JetStream) async throws -> Bool {
        for _ in 0..<300 {
            if let info = try await jetStream.consumerInfo(stream: "NOTIFICATIONS", name: "notification-worker"),
               info.numPending == 0, info.numAckPending == 0 { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }
}

/// Publishes `count` likes at `rate` per second from `origin`; each one's
/// `resource_id` is `lat-<nanoseconds since origin>` when it was sent, for
/// ``sentNanoseconds(in:)`` on the receiving side.
func publishTimed(
    count: Int, rate: Int, origin: ContinuousClock.Instant, publisher: JetStreamAsyncPublisher,
    users: (Int) -> (owner: String, trigger: String)
) async throws {
    let clock = ContinuousClock()
    let interval = Duration.seconds(1) / rate
    for index in 0..<count {
        let deadline = origin + interval * index
        if clock.now < deadline { try await clock.sleep(until: deadline) }
        let sent = clock.now - origin
        let nanos = sent.components.seconds * 1_000_000_000 + sent.components.attoseconds / 1_000_000_000
        let (owner, trigger) = users(index)
        let body = Workload.event(kind: "post.like", owner: owner, trigger: trigger, resource: "lat-\(nanos)", eventID: "\(trigger)-\(index)")
        try await publisher.publish([.init(subject: "notifications.post.like", payload: body)])
    }
}

/// The send time a frame published by ``publishTimed`` carries, in
/// nanoseconds since its origin; `nil` for other frames.
func sentNanoseconds(in payload: [UInt8]) -> Double? {
    let marker = Array(#""resource_id":"lat-"#.utf8)
    guard payload.count > marker.count else { return nil }
    var index = 0
    while index + marker.count < payload.count {
        if payload[index] == marker[0], payload[index..<index + marker.count].elementsEqual(marker) {
            var value: Double = 0
            var cursor = index + marker.count
            while cursor < payload.count, payload[cursor] >= 0x30, payload[cursor] <= 0x39 {
                value = value * 10 + Double(payload[cursor] - 0x30)
                cursor += 1
            }
            return value
        }
        index += 1
    }
    return nil
}

/// Nanoseconds since `origin`.
func nanoseconds(since origin: ContinuousClock.Instant, at now: ContinuousClock.Instant) -> Double {
    let elapsed = now - origin
    return Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
}

/// Lets this process (and the children it starts) hold as many sockets as
/// the hard limit allows.
func raiseFileLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

func progress(_ text: String) {
    FileHandle.standardError.write(Data("bench: \(text)\n".utf8))
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func percentile(_ values: [Double], _ fraction: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    let index = min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)
    return (sorted[max(index, 0)] * 100).rounded() / 100
}

/// Whether `ENRICHMENT` in this process's environment leaves enrichment on,
/// as the workers it starts (which inherit the environment) read it.
func enrichmentInEnvironment() -> Bool {
    guard let text = ProcessInfo.processInfo.environment["ENRICHMENT"]?.lowercased() else { return true }
    return !["0", "false", "no", "off"].contains(text)
}
