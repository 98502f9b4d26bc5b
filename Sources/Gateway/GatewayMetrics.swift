import CoreMetrics
import Metrics

/// The gateway's metrics (swift-metrics; the executable picks the backend).
struct GatewayMetrics: Sendable {
    let webSocketConnections = Gauge(label: "notify_websocket_connections")
    let sseConnections = Gauge(label: "notify_sse_connections")
    let framesDelivered = Counter(label: "notify_frames_delivered_total")
    let slowClients = Counter(label: "notify_slow_clients_closed_total")
    let repeatsDropped = Counter(label: "notify_repeated_messages_dropped_total")
    let heldQuiet = Counter(label: "notify_frames_held_quiet_hours_total")
    /// Channel and global rooms this gateway subscribes to (some client joined).
    let roomSubscriptions = Gauge(label: "notify_room_subscriptions")
    private let authFailures: [TokenFailure: Counter]
    // Refreshed when /metrics is scraped.
    let natsConnected = Gauge(label: "notify_nats_connected")
    let natsReconnects = Counter(label: "notify_nats_reconnects_total")
    let outboxGauge = Gauge(label: "notify_outbox_batches")
    let consumerPending = Gauge(label: "notify_jetstream_consumer_pending")
    let consumerAckPending = Gauge(label: "notify_jetstream_consumer_ack_pending")

    init() {
        var counters: [TokenFailure: Counter] = [:]
        for failure in TokenFailure.allCases {
            counters[failure] = Counter(label: "notify_auth_failures_total", dimensions: [("reason", failure.rawValue)])
        }
        authFailures = counters
    }

    func webSockets(_ open: Int) { webSocketConnections.record(open) }
    func eventStreams(_ open: Int) { sseConnections.record(open) }
    func authFailed(_ failure: TokenFailure) { authFailures[failure]?.increment() }
    func slowClient() { slowClients.increment() }
    func repeatDropped() { repeatsDropped.increment() }
    func heldForQuietHours() { heldQuiet.increment() }
    func delivered(_ count: Int) { framesDelivered.increment(by: count) }
    func rooms(_ subscribed: Int) { roomSubscriptions.record(subscribed) }

    /// Values read on each scrape of `/metrics`.
    func observe(natsConnected connected: Bool, newReconnects: Int, outboxBatches: Int?, consumer: (pending: Int64, ackPending: Int64)?) {
        natsConnected.record(connected ? 1 : 0)
        if newReconnects > 0 { natsReconnects.increment(by: newReconnects) }
        if let outboxBatches { outboxGauge.record(outboxBatches) }
        if let consumer {
            consumerPending.record(consumer.pending)
            consumerAckPending.record(consumer.ackPending)
        }
    }

    /// Routes with a label of their own; anything else is `other`, so a
    /// scanner cannot grow the number of series.
    static let routes: Set<String> = [
        "/", "/health", "/metrics", "/ws", "/dev/token", "/dev/events", "/dev/sw.js", "/v1/notifications",
        "/v1/notifications/unread_count", "/v1/notifications/read", "/v1/notifications/stream", "/v1/preferences",
        "/v1/notifications/receipts", "/v1/channels", "/v1/channels/webpush", "/v1/channels/webpush/key", "/v1/unsubscribe",
    ]

    /// Records one HTTP request's duration by route, method and status.
    func request(path: String, method: String, status: Int, since start: ContinuousClock.Instant) {
        let route = Self.routes.contains(path) ? path
            : path.hasPrefix("/v1/rooms/") && path.hasSuffix("/notifications") ? "/v1/rooms/{room}/notifications" : "other"
        Timer(label: "notify_http_request_duration_seconds", dimensions: [
            ("route", route), ("method", method), ("status", String(status)),
        ]).record(duration: ContinuousClock.now - start)
    }
}
