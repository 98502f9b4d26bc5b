import CoreMetrics
import Metrics

/// The gateway's metrics (swift-metrics; the executable picks the backend).
struct GatewayMetrics: Sendable {
    let webSocketConnections = Gauge(label: "notify_websocket_connections")
    let sseConnections = Gauge(label: "notify_sse_connections")
    let framesDelivered = Counter(label: "notify_frames_delivered_total")
    let slowClients = Counter(label: "notify_slow_clients_closed_total")
    private let authFailures: [TokenFailure: Counter]

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
    func delivered(_ count: Int) { framesDelivered.increment(by: count) }
}
