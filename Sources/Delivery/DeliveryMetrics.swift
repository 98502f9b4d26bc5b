import Metrics
import Notifications

/// Per-channel delivery counters and timers (swift-metrics):
/// `notify_delivery_jobs_total{channel}`, `notify_delivery_sent_total{channel}`,
/// `notify_delivery_failed_total{channel,reason}`,
/// `notify_delivery_retries_total{channel,reason}`,
/// `notify_delivery_skipped_total{channel}`,
/// `notify_delivery_attempt_seconds{channel}` (one try) and
/// `notify_delivery_latency_seconds{channel}` (stored → sent).
struct DeliveryMetrics: Sendable {
    private let jobs: [DeliveryChannel: Counter]
    private let sentCount: [DeliveryChannel: Counter]
    private let skippedCount: [DeliveryChannel: Counter]
    private let attempt: [DeliveryChannel: Timer]
    private let latency: [DeliveryChannel: Timer]

    init() {
        func table<T>(_ make: (DeliveryChannel) -> T) -> [DeliveryChannel: T] {
            Dictionary(uniqueKeysWithValues: DeliveryChannel.allCases.map { ($0, make($0)) })
        }
        jobs = table { Counter(label: "notify_delivery_jobs_total", dimensions: [("channel", $0.rawValue)]) }
        sentCount = table { Counter(label: "notify_delivery_sent_total", dimensions: [("channel", $0.rawValue)]) }
        skippedCount = table { Counter(label: "notify_delivery_skipped_total", dimensions: [("channel", $0.rawValue)]) }
        attempt = table { Timer(label: "notify_delivery_attempt_seconds", dimensions: [("channel", $0.rawValue)]) }
        latency = table { Timer(label: "notify_delivery_latency_seconds", dimensions: [("channel", $0.rawValue)]) }
    }

    func queued(_ channel: DeliveryChannel) { jobs[channel]?.increment() }
    func skipped(_ channel: DeliveryChannel) { skippedCount[channel]?.increment() }

    func tried(_ channel: DeliveryChannel, since started: ContinuousClock.Instant) {
        attempt[channel]?.record(since: started)
    }

    func sent(_ channel: DeliveryChannel, lag seconds: Double) {
        sentCount[channel]?.increment()
        latency[channel]?.recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }

    // Reasons are a short fixed set per sender (`http_503`, `timeout`, `smtp_550`).
    func failed(_ channel: DeliveryChannel, reason: String) {
        Counter(label: "notify_delivery_failed_total", dimensions: [("channel", channel.rawValue), ("reason", reason)]).increment()
    }

    func retried(_ channel: DeliveryChannel, reason: String) {
        Counter(label: "notify_delivery_retries_total", dimensions: [("channel", channel.rawValue), ("reason", reason)]).increment()
    }
}
