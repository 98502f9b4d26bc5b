import Foundation
import Gateway
import KeyValueStore
import Notifications
import ProcessSupport
import SQLiteStore

#if canImport(Glibc)
import Glibc
#endif

/// `--feed true`: feed page reads through the release `notify gateway`
/// (its own process, `ENRICHMENT=true`) over a store holding
/// `--notifications` notifications spread evenly over `--feed-owners`
/// owners, with actor profiles from a pool of ``actors`` users.
///
/// The store is filled directly through ``NotificationRepository`` (no
/// NATS, no worker). One client then sends `--requests` sequential
/// `GET /v1/notifications?limit=20` over one keep-alive connection, for
/// random owners: first pages, and about a third of the requests the
/// second page of the owner just read. Each response must be 200 with the
/// page the store holds; latencies are measured per request by the client.
enum FeedBenchmark {
    /// Trigger users the notifications come from.
    static let actors = 50_000
    static let pageSize = 20
    static let warmUpRequests = 500
    /// Events per ``NotificationRepository/apply(_:updates:publishedOutboxes:)``.
    static let fillBatch = 2_000
    /// Kinds that each create a notification of their own, with the
    /// prefix of their resource ids.
    static let kinds = [("post.like", "post"), ("comment.like", "comment"), ("reply.post", "post"), ("reply.comment", "comment")]

    static func run(_ options: Benchmark.Options, server: NATSServerProcess, directory: String) async throws -> [String: Any] {
        guard options.notifications > 0, options.feedOwners > 0, options.requests > 0 else {
            throw BenchmarkError("--notifications, --feed-owners and --requests must be positive")
        }
        let layout = FeedLayout(notifications: options.notifications, owners: options.feedOwners)
        let data = directory + "/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let fillSeconds = try await fill(options, path: data + "/notify.sqlite")
        let storeBytes = ["", "-wal"].reduce(0) { total, suffix in
            total + ((try? FileManager.default.attributesOfItem(atPath: data + "/notify.sqlite" + suffix)[.size] as? Int) ?? 0)
        }

        let gateway = try NotifyProcess.start(
            url: "nats://127.0.0.1:\(server.port)", directory: directory, synchronous: options.synchronous, batchSize: options.batchSize,
            command: "gateway",
            extra: ["JWT_SECRET": GatewayBenchmark.secret, "PORT": "0", "HOST": "127.0.0.1", "ENRICHMENT": "true"],
            log: "gateway.log")
        defer { gateway.stop() }
        let port = try await gateway.waitForPort()
        progress("gateway on port \(port)")

        let verifier = TokenVerifier(secret: GatewayBenchmark.secret)
        let expires = Int64(Date().timeIntervalSince1970) + 86_400
        let tokens = (0..<layout.owners).map { verifier.sign(user: layout.owner($0), expiresAt: expires) }
        let requests = options.requests
        progress("\(warmUpRequests) warm-up reads, then \(requests) measured, over one connection")
        let run = try await onThread { () throws(BenchmarkError) -> FeedReadRun in
            var reader = try FeedReader(port: port, layout: layout, tokens: tokens, seed: 7)
            let warmUp = try reader.read(requests: warmUpRequests)
            if warmUp.failures > 0 { progress("\(warmUp.failures) of the warm-up reads failed, such as: \(warmUp.failureSamples[0])") }
            let before = gateway.cpuSeconds()
            var run = try reader.read(requests: requests)
            if let before, let after = gateway.cpuSeconds() { run.gatewayCPUSeconds = after - before }
            return run
        }

        for failure in run.failureSamples { progress("failed: \(failure)") }
        // Latencies are of the good reads; the rate counts every request sent.
        let all = run.first + run.second
        let sent = all.count + run.failures
        let perSecond = Double(sent) / max(run.seconds, 1e-9)
        progress(String(format: "%d feed reads (%d second pages): p50 %.2f ms, p99 %.2f ms, max %.2f ms, %.0f/s, %d failed",
                        sent, run.second.count, percentile(all, 0.5), percentile(all, 0.99), all.max() ?? 0, perSecond, run.failures))
        guard run.failures * 1_000 <= sent else {
            throw BenchmarkError("\(run.failures) of \(sent) feed reads failed (more than 0.1%); see \(directory)/gateway.log (--keep true)")
        }
        let cpuPerRequest: Any = run.gatewayCPUSeconds.map { ($0 * 1_000 / Double(max(sent, 1)) * 1_000).rounded() / 1_000 } ?? NSNull()
        return [
            "mode": "feed-read",
            "notifications": options.notifications,
            "owners": options.feedOwners,
            "actors": actors,
            "enrichment": true,
            "page_size": pageSize,
            "requests": sent,
            "second_pages": run.second.count,
            "warmup_requests": warmUpRequests,
            "failures": run.failures,
            "reconnects": run.reconnects,
            "p50_ms": percentile(all, 0.5),
            "p90_ms": percentile(all, 0.9),
            "p99_ms": percentile(all, 0.99),
            "p99_9_ms": percentile(all, 0.999),
            "max_ms": ((all.max() ?? 0) * 100).rounded() / 100,
            "second_page_p50_ms": run.second.isEmpty ? NSNull() : percentile(run.second, 0.5),
            "second_page_p99_ms": run.second.isEmpty ? NSNull() : percentile(run.second, 0.99),
            "requests_per_second": Int(perSecond),
            "gateway_cpu_ms_per_request": cpuPerRequest,
            "gateway_peak_rss_mib": gateway.peakRSSMiB(),
            "store_mib": (Double(storeBytes) / 1_048_576 * 10).rounded() / 10,
            "fill_seconds": (fillSeconds * 10).rounded() / 10,
            "fill_notifications_per_second": Int(Double(options.notifications) / max(fillSeconds, 1e-9)),
            "sqlite_synchronous": options.synchronous,
            "cores": ProcessInfo.processInfo.activeProcessorCount,
        ]
    }

    /// Applies one creating event per notification, in batches, to a new
    /// SQLite store at `path`; returns the seconds it took (building and
    /// validating the events included).
    static func fill(_ options: Benchmark.Options, path: String) async throws -> Double {
        let synchronous = SQLiteDatabase.Synchronous(rawValue: options.synchronous) ?? .full
        let database = try await SQLiteDatabase.open(.init(path: path, synchronous: synchronous))
        do {
            let seconds = try await fill(options, database: database, path: path)
            await database.close()
            return seconds
        } catch {
            await database.close()
            throw error
        }
    }

    private static func fill(_ options: Benchmark.Options, database: SQLiteDatabase, path: String) async throws -> Double {
        let store = try await SQLiteKeyValueStore(database: database, tableName: "notifications")
        let repository = NotificationRepository(store: store, aggregateWindow: nil, enrichment: true)
        let validator = EventValidator(subjects: EventSubjects(filter: "notifications.>"))
        let layout = FeedLayout(notifications: options.notifications, owners: options.feedOwners)
        var random = SplitMix(seed: 42)
        let now = Int64(Date().timeIntervalSince1970)
        progress("filling \(path) with \(options.notifications) notifications for \(options.feedOwners) owners from \(actors) actors (enrichment on, synchronous=\(options.synchronous))")
        let clock = ContinuousClock()
        let started = clock.now
        var published: [String] = []
        var applied = 0
        while applied < options.notifications {
            let count = min(fillBatch, options.notifications - applied)
            var batch: [IncomingEvent] = []
            batch.reserveCapacity(count)
            for index in applied..<applied + count {
                let (kind, resource) = kinds[index % kinds.count]
                let body = Workload.event(
                    kind: kind, owner: layout.owner(index % layout.owners), trigger: "actor-\(random.next() % UInt64(actors))",
                    resource: "\(resource)-\(index)", eventID: "feed-\(index)")
                switch validator.validate(subject: "notifications." + kind, body: body, now: now) {
                case .success(let event):
                    batch.append(IncomingEvent(event: event, idempotencyKey: IncomingEvent.key(for: event, streamCreated: 1, sequence: UInt64(index))))
                case .failure(let rejection):
                    throw BenchmarkError("event \(index) was rejected: \(rejection)")
                }
            }
            // As the worker does: outboxes published after one batch are
            // deleted in the next batch's transaction.
            let result = try await repository.apply(batch, publishedOutboxes: published)
            published = result.outbox.map { [$0.id] } ?? []
            let created = result.outcomes.filter { if case .created = $0 { true } else { false } }.count
            guard created == count else {
                throw BenchmarkError("a batch of \(count) events created \(created) notifications, not one each: \(Set(result.outcomes.map { "\($0)" }).sorted().prefix(3).joined(separator: ", "))")
            }
            applied += count
            if applied % 100_000 < count || applied == options.notifications {
                progress(String(format: "%d notifications stored, %.0f/s so far", applied, Double(applied) / seconds(clock.now - started)))
            }
        }
        try await repository.deleteOutboxes(published)
        return seconds(clock.now - started)
    }

    /// Runs `body` on a thread of its own: its socket calls block.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws(BenchmarkError) -> T) async throws(BenchmarkError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, BenchmarkError>, Never>) in
            Thread { continuation.resume(returning: Result { () throws(BenchmarkError) -> T in try body() }) }.start()
        }
        return try result.get()
    }
}

/// Where the fill put the notifications: notification `i` belongs to
/// owner `i % owners`, so each owner has `notifications / owners` of them
/// (one more for the first `notifications % owners`).
struct FeedLayout: Sendable {
    let notifications: Int
    let owners: Int

    func owner(_ index: Int) -> String { "user-\(index)" }

    /// How many notifications owner `index` has.
    func stored(_ index: Int) -> Int {
        notifications / owners + (index < notifications % owners ? 1 : 0)
    }
}

/// What one series of feed reads measured.
struct FeedReadRun: Sendable {
    /// Latencies of good first-page reads, in milliseconds.
    var first: [Double] = []
    /// Latencies of good second-page reads, in milliseconds.
    var second: [Double] = []
    var failures = 0
    /// The first few failures, described.
    var failureSamples: [String] = []
    /// Connections opened again, after the gateway closed one or a read failed.
    var reconnects = 0
    /// Wall-clock seconds of the series less the client's checks of the bodies.
    var seconds: Double = 0
    /// CPU seconds the gateway used meanwhile.
    var gatewayCPUSeconds: Double?
}

/// One client reading random owners' feeds in sequence over one
/// keep-alive connection; blocking, for a thread of its own.
struct FeedReader: ~Copyable {
    let port: Int
    let layout: FeedLayout
    let tokens: [String]
    private var connection: HTTPConnection
    private var random: SplitMix
    private var run = FeedReadRun()

    init(port: Int, layout: FeedLayout, tokens: [String], seed: UInt64) throws(BenchmarkError) {
        self.port = port
        self.layout = layout
        self.tokens = tokens
        self.connection = try HTTPConnection(port: port)
        self.random = SplitMix(seed: seed)
    }

    /// `requests` reads: a random owner's first page and, every other
    /// time, that owner's second page.
    mutating func read(requests: Int) throws(BenchmarkError) -> FeedReadRun {
        run = FeedReadRun()
        let clock = ContinuousClock()
        let started = clock.now
        var checking = Duration.zero
        var sent = 0
        while sent < requests {
            let owner = Int(random.next() % UInt64(layout.owners))
            let stored = layout.stored(owner)
            let next = try page(owner: owner, before: nil, expected: min(stored, FeedBenchmark.pageSize),
                                hasNext: stored > FeedBenchmark.pageSize, checking: &checking)
            sent += 1
            guard sent < requests, let next, random.next() % 2 == 0 else { continue }
            _ = try page(owner: owner, before: next, expected: min(stored - FeedBenchmark.pageSize, FeedBenchmark.pageSize),
                         hasNext: stored > 2 * FeedBenchmark.pageSize, checking: &checking)
            sent += 1
        }
        run.seconds = seconds(clock.now - started - checking)
        return run
    }

    /// Reads one page and checks it; returns its `next` cursor.
    private mutating func page(owner: Int, before: String?, expected: Int, hasNext: Bool, checking: inout Duration) throws(BenchmarkError) -> String? {
        var path = "/v1/notifications?limit=\(FeedBenchmark.pageSize)"
        if let before { path += "&before=" + before }
        let clock = ContinuousClock()
        let started = clock.now
        let response: HTTPConnection.Response
        do {
            response = try connection.get(path, port: port, token: tokens[owner])
        } catch {
            fail("GET \(path) for \(layout.owner(owner)): \(error)")
            connection = try HTTPConnection(port: port)
            run.reconnects += 1
            return nil
        }
        let milliseconds = seconds(clock.now - started) * 1_000
        let checked = clock.now
        defer { checking += clock.now - checked }
        if response.closes {
            connection = try HTTPConnection(port: port)
            run.reconnects += 1
        }
        switch check(response, owner: layout.owner(owner), expected: expected, hasNext: hasNext) {
        case .success(let next):
            if before == nil { run.first.append(milliseconds) } else { run.second.append(milliseconds) }
            return next
        case .failure(let problem):
            fail("GET \(path) for \(layout.owner(owner)): \(problem.description)")
            return nil
        }
    }

    private mutating func fail(_ description: String) {
        run.failures += 1
        if run.failureSamples.count < 5 { run.failureSamples.append(description) }
    }

    /// Whether `response` is the page expected: 200, `expected` items of
    /// `owner`, each showing its actor's name and picture, and a `next`
    /// cursor exactly when more are stored.
    private func check(_ response: HTTPConnection.Response, owner: String, expected: Int, hasNext: Bool) -> Result<String?, BenchmarkError> {
        let text = { String(decoding: response.body.prefix(300), as: UTF8.self) }
        guard response.status == 200 else { return .failure(BenchmarkError("status \(response.status): \(text())")) }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any],
              let items = object["items"] as? [[String: Any]]
        else { return .failure(BenchmarkError("not a feed page: \(text())")) }
        guard items.count == expected else { return .failure(BenchmarkError("\(items.count) items, not \(expected)")) }
        for item in items {
            guard item["owner"] as? String == owner, item["username"] is String, item["user_picture"] is String else {
                return .failure(BenchmarkError("an item without its owner, username or user_picture: \(item)"))
            }
        }
        let next = object["next"] as? String
        guard (next != nil) == hasNext else { return .failure(BenchmarkError("next is \(next ?? "null") with \(expected) items shown")) }
        return .success(next)
    }
}

/// A keep-alive HTTP/1.1 connection to 127.0.0.1 over a blocking socket
/// (10 s receive timeout): one GET at a time, bodies by `Content-Length`.
struct HTTPConnection: ~Copyable {
    /// A response's status, body, and whether the server closes after it.
    struct Response {
        let status: Int
        let body: [UInt8]
        let closes: Bool
    }

    private let fd: Int32
    /// Bytes read but not yet taken as a response.
    private var buffer: [UInt8] = []
    private var chunk = [UInt8](repeating: 0, count: 65_536)

    init(port: Int) throws(BenchmarkError) {
        do {
            fd = try LoopbackSocket.connect(port: port)
        } catch {
            throw BenchmarkError(error.description)
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var on: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    /// Sends `GET path` with `token` as its bearer and reads the response.
    mutating func get(_ path: String, port: Int, token: String) throws(BenchmarkError) -> Response {
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAuthorization: Bearer \(token)\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw BenchmarkError("send: \(String(cString: strerror(errno)))") }
            sent += count
        }
        var headEnd: Int?
        var searched = 0
        while headEnd == nil {
            if buffer.count >= 4 {
                headEnd = (max(searched, 0)..<buffer.count - 3).first { buffer[$0] == 13 && buffer[$0 + 1] == 10 && buffer[$0 + 2] == 13 && buffer[$0 + 3] == 10 }
                searched = buffer.count - 3
            }
            if headEnd == nil { try fill() }
        }
        guard let headEnd else { throw BenchmarkError("no response head") }
        let lines = String(decoding: buffer[..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
        guard let statusLine = lines.first, let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw BenchmarkError("bad status line: \(lines.first ?? "")")
        }
        var length: Int?
        var closes = false
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch name {
            case "content-length": length = Int(value)
            case "connection": closes = value.lowercased() == "close"
            case "transfer-encoding": throw BenchmarkError("a \(value) response; this client reads Content-Length bodies only")
            default: break
            }
        }
        guard let length else { throw BenchmarkError("a response without Content-Length: \(statusLine)") }
        let end = headEnd + 4 + length
        while buffer.count < end { try fill() }
        let body = Array(buffer[(headEnd + 4)..<end])
        buffer.removeFirst(end)
        return Response(status: status, body: body, closes: closes)
    }

    /// Appends what the socket has to ``buffer``, waiting for it.
    private mutating func fill() throws(BenchmarkError) {
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count == 0 { throw BenchmarkError("the gateway closed the connection") }
        if count < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { throw BenchmarkError("no response within 10 s") }
            throw BenchmarkError("recv: \(String(cString: strerror(errno)))")
        }
        buffer.append(contentsOf: chunk[0..<count])
    }
}
