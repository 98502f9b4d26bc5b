import Foundation
@testable import Gateway
import HummingbirdWSClient
import KeyValueStore
import Logging
import NATS
import NIOWebSocket
import Notifications
import ServiceLifecycle
import SQLiteStore
import Synchronization
import Testing
import TestSupport

/// A nats-server, a store (a SQLite file or a DynamoDB emulator table), a
/// worker and a gateway on a free port, all real; the gateway can be
/// restarted on its own.
final class GatewayHarness: Sendable {
    static let secret = "gateway-test-secret-of-32-bytes!!"
    let server: NATSServer
    let directory: TemporaryDirectory
    let connection: NATSConnection
    let jetStream: JetStream
    let verifier = TokenVerifier(secret: GatewayHarness.secret)
    private let worker: Running
    private let gateway: Mutex<Running?>
    private let gatewayPort = Atomic<Int>(0)
    private let configure: @Sendable (inout GatewayConfiguration) -> Void
    let location: StoreLocation
    /// The repositories' enrichment settings (worker and gateway alike).
    private let enrichment: Enrichment

    /// Enrichment as `ENRICHMENT`, `CDN_BASE_URL` and `TEMPLATES_DIR` set it.
    struct Enrichment: Sendable {
        var on = false
        var pictures = PictureURLs()
        var texts: (any NotificationTexts)?

        func repository(_ store: any KeyValueStore, aggregateWindow: Duration? = nil) -> NotificationRepository {
            NotificationRepository(store: store, aggregateWindow: aggregateWindow, texts: texts, enrichment: on, pictures: pictures)
        }
    }

    /// A service group, its task, and what it opened.
    struct Running: Sendable {
        let group: ServiceGroup
        let task: Task<Void, any Error>
        let opened: OpenedStore
        let connection: NATSConnection

        func stop() async {
            await group.triggerGracefulShutdown()
            _ = await task.result
            await opened.close()
            await connection.close()
        }
    }

    var port: Int { gatewayPort.load(ordering: .relaxed) }

    /// - Parameter aggregateWindow: the worker's (`AGGREGATE_WINDOW`); off by default.
    static func run(
        backend: Backend = .sqlite, aggregateWindow: Duration? = nil, throttle: ThrottleLimits? = nil, enrichment: Enrichment = Enrichment(),
        configure: @escaping @Sendable (inout GatewayConfiguration) -> Void = { _ in },
        _ body: (GatewayHarness) async throws -> Void
    ) async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let location = try await StoreLocation.make(backend, directory: directory)
                let harness = try await GatewayHarness(
                    server: server, directory: directory, location: location, aggregateWindow: aggregateWindow, throttle: throttle,
                    enrichment: enrichment, configure: configure)
                do {
                    try await body(harness)
                } catch {
                    await harness.stop()
                    await location.remove()
                    throw error
                }
                await harness.stop()
                await location.remove()
            }
        }
    }

    private init(
        server: NATSServer, directory: TemporaryDirectory, location: StoreLocation, aggregateWindow: Duration?, throttle: ThrottleLimits?,
        enrichment: Enrichment, configure: @escaping @Sendable (inout GatewayConfiguration) -> Void
    ) async throws {
        self.server = server
        self.enrichment = enrichment
        self.directory = directory
        self.location = location
        self.configure = configure
        connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
        jetStream = try JetStream(connection: connection)
        worker = try await Self.startWorker(
            server: server, location: location, aggregateWindow: aggregateWindow, throttle: throttle, enrichment: enrichment)
        gateway = Mutex(nil)
        try await startGateway()
    }

    private static var quietLogger: Logger {
        var logger = Logger(label: "gateway-test")
        logger.logLevel = .critical
        return logger
    }

    private static func startWorker(
        server: NATSServer, location: StoreLocation, aggregateWindow: Duration?, throttle: ThrottleLimits?, enrichment: Enrichment
    ) async throws -> Running {
        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
        let opened = try await location.open()
        let repository = enrichment.repository(opened.store, aggregateWindow: aggregateWindow)
        let worker = try await NotificationWorker.prepare(
            configuration: {
                var configuration = WorkerConfiguration(streamStorage: .file, ackWait: .seconds(5), fetchWait: .milliseconds(100))
                configuration.throttle = throttle
                return configuration
            }(),
            connection: connection, repository: repository, logger: quietLogger)
        let group = ServiceGroup(services: [worker], logger: quietLogger)
        return Running(group: group, task: Task { try await group.run() }, opened: opened, connection: connection)
    }

    /// Starts (or restarts) the gateway on a free port.
    func startGateway() async throws {
        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
        let opened = try await location.open()
        let repository = enrichment.repository(opened.store)
        var configuration = GatewayConfiguration(host: "127.0.0.1", port: 0, jwtSecret: Self.secret)
        configure(&configuration)
        let gateway = try Gateway(
            configuration: configuration, connection: connection, repository: repository, logger: Self.quietLogger,
            metricsText: { Array("# metrics\nnotify_up 1\n".utf8) })
        let (ready, readyContinuation) = AsyncStream.makeStream(of: Int.self)
        let services = gateway.services { port in readyContinuation.yield(port) }
        let group = ServiceGroup(services: services, logger: Self.quietLogger)
        let task = Task { try await group.run() }
        var iterator = ready.makeAsyncIterator()
        guard let port = await iterator.next() else { throw RawHTTPError("the gateway did not start") }
        gatewayPort.store(port, ordering: .relaxed)
        self.gateway.withLock { $0 = Running(group: group, task: task, opened: opened, connection: connection) }
    }

    func stopGateway() async {
        let running = gateway.withLock { running -> Running? in
            defer { running = nil }
            return running
        }
        await running?.stop()
    }

    private func stop() async {
        await stopGateway()
        await worker.stop()
        await connection.close()
    }

    // MARK: Helpers

    func token(_ user: String, expiresIn seconds: Int64 = 600) -> String {
        verifier.sign(user: user, expiresAt: Int64(Date().timeIntervalSince1970) + seconds)
    }

    /// Publishes a like (or, with `kind`, an unlike) for `owner` through
    /// JetStream (the worker stores it); `extra` is appended to the body's
    /// fields (`,"priority":"high"`).
    func like(
        owner: String, resource: String = "p-\(UUID().uuidString.prefix(8))", trigger: String = "ben", excerpt: String? = nil,
        kind: String = "post.like", extra: String = ""
    ) async throws {
        var body = #"{"owner":"\#(owner)","trigger_user":"\#(trigger)","action":1,"resource_type":"POST","resource_id":"\#(resource)","created_at":\#(Int(Date().timeIntervalSince1970))"#
        if let excerpt { body += #","excerpt":"\#(excerpt)""# }
        body += extra
        body += "}"
        _ = try await jetStream.publish("notifications." + kind, payload: Array(body.utf8))
    }

    /// GET with a bearer token.
    func get(_ path: String, token: String?) async throws -> RawHTTPResponse {
        try await httpRequest(port: port, "GET", path, headers: token.map { [("Authorization", "Bearer \($0)")] } ?? [])
    }

    /// A raw WebSocket upgrade request; returns the response head.
    func upgrade(_ path: String = "/ws", headers: [(String, String)] = []) async throws -> RawHTTPResponse {
        let connection = try RawHTTPConnection(port: port)
        try connection.send("GET", path, headers: [
            ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] + headers)
        let text = await connection.read(timeout: .seconds(5)) { text in
            text.hasPrefix("HTTP/1.1 101") ? text.contains("\r\n\r\n") : text.contains("}") || text.contains("\r\n\r\n") && text.lowercased().contains("content-length: 0")
        }
        return try RawHTTPResponse(text)
    }
}

/// A WebSocket client that records every text frame and how the connection ended.
final class TestWebSocket: Sendable {
    private final class FrameLog: Sendable {
        let frames = Mutex<[String]>([])
    }

    private let log = FrameLog()
    private let closing: AsyncStream<Void>.Continuation
    private let sending: AsyncStream<String>.Continuation
    private let task: Task<WebSocketCloseFrame?, any Error>

    /// Connects to `path` (with its query). With `readAfter`, the client
    /// reads nothing until that long has passed (a slow client).
    init(port: Int, path: String, readAfter: Duration? = nil, send: [String] = []) {
        let (closeSignal, closing) = AsyncStream.makeStream(of: Void.self)
        self.closing = closing
        let (outgoing, sending) = AsyncStream.makeStream(of: String.self)
        self.sending = sending
        let log = self.log
        var logger = Logger(label: "ws-client")
        logger.logLevel = .critical
        task = Task {
            try await WebSocketClient.connect(
                url: "ws://127.0.0.1:\(port)\(path)", configuration: .init(maxFrameSize: 1 << 20), logger: logger
            ) { inbound, outbound, _ in
                for text in send { try await outbound.write(.text(text)) }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        if let readAfter { try await Task.sleep(for: readAfter) }
                        for try await message in inbound.messages(maxSize: 1 << 20) {
                            if case .text(let text) = message { log.frames.withLock { $0.append(text) } }
                        }
                    }
                    group.addTask {
                        for await _ in closeSignal {}
                        try await outbound.close(.normalClosure, reason: nil)
                    }
                    group.addTask {
                        for await text in outgoing { try await outbound.write(.text(text)) }
                        try await Task.sleep(for: .seconds(3_600))
                    }
                    try await group.next()
                    group.cancelAll()
                }
            }
        }
    }

    deinit {
        closing.finish()
        sending.finish()
        task.cancel()
    }

    /// Sends a text frame (once connected).
    func send(_ text: String) {
        sending.yield(text)
    }

    var texts: [String] { log.frames.withLock { $0 } }

    /// The frames as JSON objects.
    var objects: [[String: Any]] {
        texts.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
    }

    /// Waits until at least `count` frames arrived.
    @discardableResult
    func wait(for count: Int, timeout: Duration = .seconds(10)) async -> [[String: Any]] {
        let deadline = ContinuousClock.now + timeout
        while texts.count < count, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return objects
    }

    /// Closes from the client side.
    func close() async {
        closing.finish()
        _ = await task.result
    }

    /// Waits for the connection to end; the server's close frame, or `nil`
    /// when it did not end in time or ended without one.
    func closedByServer(timeout: Duration = .seconds(15)) async -> WebSocketCloseFrame? {
        let task = self.task
        return await withTaskGroup(of: WebSocketCloseFrame??.self) { group in
            group.addTask { .some((try? await task.value) ?? nil) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return .none
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? nil
        }
    }
}

/// The `type` of each frame.
func types(_ frames: [[String: Any]]) -> [String] {
    frames.compactMap { $0["type"] as? String }
}

/// The notification id of each `notification.created` frame.
func createdIDs(_ frames: [[String: Any]]) -> [String] {
    frames.compactMap { ($0["notification"] as? [String: Any])?["id"] as? String }
}
