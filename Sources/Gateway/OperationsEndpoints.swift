import Hummingbird
import JSON
public import Logging
public import NATS
import NIOCore
public import Notifications
public import ServiceLifecycle
import Synchronization

/// `GET /health` and `GET /metrics`, served by the gateway on its port and
/// by ``OperationsServer`` for a worker that runs alone.
final class OperationsEndpoints: Sendable {
    let connection: NATSConnection
    let repository: NotificationRepository
    let consumer: ConsumerName?
    let metrics: GatewayMetrics
    let metricsText: (@Sendable () -> [UInt8])?
    let version: String
    let startedAt = ContinuousClock.now
    /// Reads the worker's consumer state.
    private let consumerReader: JetStream?
    /// NATS reconnects already counted in the metrics.
    private let reconnectsCounted = Atomic<Int>(0)
    /// Open WebSockets and SSE streams; `nil` where there are none (a worker).
    private let openConnections: (@Sendable () -> (webSockets: Int, eventStreams: Int))?

    init(
        connection: NATSConnection, repository: NotificationRepository, consumer: ConsumerName?, metrics: GatewayMetrics,
        metricsText: (@Sendable () -> [UInt8])?, version: String,
        openConnections: (@Sendable () -> (webSockets: Int, eventStreams: Int))?
    ) throws {
        self.connection = connection
        self.repository = repository
        self.consumer = consumer
        self.metrics = metrics
        self.metricsText = metricsText
        self.version = version
        self.openConnections = openConnections
        self.consumerReader = consumer == nil ? nil : try JetStream(connection: connection)
    }

    func add(to router: Router<GatewayContext>) {
        router.get("/health") { [self] _, _ in await health() }
        router.get("/metrics") { [self] _, _ -> Response in
            guard let metricsText else { throw APIError(.notFound, code: "not_found", message: "metrics are not enabled") }
            await refreshGauges()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: metricsText())))
        }
    }

    /// 200 when NATS answers and the store accepts a write, 503
    /// otherwise; with the consumer's backlog, the outbox depth,
    /// connections, version and uptime.
    func health() async -> Response {
        let status = connection.status
        // Connected is not enough: a frozen server keeps the socket open.
        // It must answer a ping, within a second.
        var answers = false
        if status == .connected {
            do {
                try await connection.flush(timeout: .seconds(1))
                answers = true
            } catch {}
        }
        var storeOK = true
        do { try await repository.probeWrite() } catch { storeOK = false }
        let outbox = try? await repository.outboxDepth()
        let consumer = answers ? await consumerState() : nil
        let healthy = answers && storeOK
        var json = JSONWriterBridge()
        json.raw("{\"status\":")
        json.string(healthy ? "ok" : "unavailable")
        json.raw(",\"nats\":")
        json.string(status == .connected && !answers ? "not answering" : status.description)
        json.raw(",\"nats_reconnects\":")
        json.integer(Int64(connection.reconnectCount))
        json.raw(",\"store\":")
        json.string(storeOK ? "ok" : "unavailable")
        json.raw(",\"outbox_batches\":")
        if let outbox { json.integer(Int64(outbox)) } else { json.raw("null") }
        json.raw(",\"consumer\":")
        if let consumer {
            json.raw("{\"stream\":")
            json.string(consumer.stream)
            json.raw(",\"name\":")
            json.string(consumer.name)
            json.raw(",\"pending\":")
            json.integer(Int64(clamping: consumer.numPending))
            json.raw(",\"ack_pending\":")
            json.integer(consumer.numAckPending)
            json.raw("}")
        } else {
            json.raw("null")
        }
        if let open = openConnections?() {
            json.raw(",\"websockets\":")
            json.integer(Int64(open.webSockets))
            json.raw(",\"event_streams\":")
            json.integer(Int64(open.eventStreams))
        }
        json.raw(",\"version\":")
        json.string(version)
        json.raw(",\"uptime_seconds\":")
        json.integer((ContinuousClock.now - startedAt).components.seconds)
        json.raw("}")
        return jsonResponse(json.bytes, status: healthy ? .ok : .serviceUnavailable)
    }

    /// The worker's consumer, when configured and readable.
    private func consumerState() async -> ConsumerInfo? {
        guard let consumerReader, let consumer else { return nil }
        return try? await consumerReader.consumerInfo(stream: consumer.stream, name: consumer.name)
    }

    /// Gauges that are read, not counted: refreshed on each scrape.
    private func refreshGauges() async {
        let connected = connection.status == .connected
        let reconnects = connection.reconnectCount
        let counted = reconnectsCounted.exchange(reconnects, ordering: .relaxed)
        let outbox = try? await repository.outboxDepth()
        let consumer = connected ? await consumerState() : nil
        metrics.observe(
            natsConnected: connected, newReconnects: max(0, reconnects - counted), outboxBatches: outbox,
            consumer: consumer.map { (Int64(clamping: $0.numPending), $0.numAckPending) })
    }
}

/// `/health` and `/metrics` on a port of their own, for a worker that runs
/// without the gateway (`METRICS_PORT`), so that its health can be checked
/// and its metrics scraped like the gateway's.
public final class OperationsServer: Sendable {
    private let endpoints: OperationsEndpoints
    private let host: String
    private let port: Int
    private let logger: Logger

    /// - Parameters:
    ///   - consumer: the worker's JetStream consumer, whose backlog is reported.
    ///   - metricsText: the Prometheus exposition served at `/metrics`.
    public init(
        host: String, port: Int, connection: NATSConnection, repository: NotificationRepository, consumer: ConsumerName?,
        version: String, logger: Logger, metricsText: (@Sendable () -> [UInt8])?
    ) throws {
        var logger = logger
        logger[metadataKey: "component"] = "operations"
        self.host = host
        self.port = port
        self.logger = logger
        self.endpoints = try OperationsEndpoints(
            connection: connection, repository: repository, consumer: consumer, metrics: GatewayMetrics(),
            metricsText: metricsText, version: version, openConnections: nil)
    }

    /// The HTTP server; `onListening` receives the bound port.
    public func services(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) -> [any Service] {
        let router = Router(context: GatewayContext.self)
        router.add(middleware: RequestMetricsMiddleware(metrics: endpoints.metrics))
        endpoints.add(to: router)
        let application = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "notify"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        return [application]
    }
}
