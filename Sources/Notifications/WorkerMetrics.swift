package import CoreMetrics
import Metrics

extension Timer {
    /// Records the time since `started`.
    package func record(since started: ContinuousClock.Instant) {
        let (seconds, attoseconds) = (ContinuousClock.now - started).components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// The worker's counters and timers (swift-metrics; the executable chooses
/// the backend, e.g. Prometheus).
struct WorkerMetrics: Sendable {
    let received = Counter(label: "notify_events_received_total")
    let stored = Counter(label: "notify_events_total", dimensions: [("result", "stored")])
    let duplicate = Counter(label: "notify_events_total", dimensions: [("result", "deduplicated")])
    let retracted = Counter(label: "notify_events_total", dimensions: [("result", "retracted")])
    let aggregated = Counter(label: "notify_events_total", dimensions: [("result", "aggregated")])
    let actorRemoved = Counter(label: "notify_events_total", dimensions: [("result", "actor_removed")])
    let muted = Counter(label: "notify_events_total", dimensions: [("result", "muted")])
    let scheduled = Counter(label: "notify_events_total", dimensions: [("result", "scheduled")])
    let unscheduled = Counter(label: "notify_events_total", dimensions: [("result", "unscheduled")])
    let released = Counter(label: "notify_scheduled_released_total")
    let throttledOwner = Counter(label: "notify_events_throttled_total", dimensions: [("limit", "owner")])
    let throttledTriggerUser = Counter(label: "notify_events_throttled_total", dimensions: [("limit", "trigger_user")])
    let nothingToRetract = Counter(label: "notify_events_total", dimensions: [("result", "retract_not_found")])
    let alreadyProcessed = Counter(label: "notify_events_total", dimensions: [("result", "already_processed")])
    let superseded = Counter(label: "notify_events_total", dimensions: [("result", "superseded")])
    let selfNotification = Counter(label: "notify_events_total", dimensions: [("result", "self_notification")])
    let resourceDeleted = Counter(label: "notify_events_total", dimensions: [("result", "resource_deleted")])
    let profilesApplied = Counter(label: "notify_updates_total", dimensions: [("kind", "profile"), ("result", "applied")])
    let profilesStale = Counter(label: "notify_updates_total", dimensions: [("kind", "profile"), ("result", "stale")])
    let resourcesApplied = Counter(label: "notify_updates_total", dimensions: [("kind", "resource"), ("result", "applied")])
    let resourcesStale = Counter(label: "notify_updates_total", dimensions: [("kind", "resource"), ("result", "stale")])
    let resourceRetractions = Counter(label: "notify_resource_retractions_total")
    let rejectedTotal = Counter(label: "notify_events_total", dimensions: [("result", "rejected")])
    let deadLetters = Counter(label: "notify_dlq_published_total")
    let redeliveries = Counter(label: "notify_jetstream_redeliveries_total")
    let storeFailures = Counter(label: "notify_store_failures_total")
    let published = Counter(label: "notify_user_messages_published_total")
    let batchSize = Recorder(label: "notify_batch_size", aggregate: true)
    let batchDuration = Timer(label: "notify_batch_duration_seconds")
    let storeDuration = Timer(label: "notify_store_transaction_duration_seconds")
    private let rejected: [RejectionReason: Counter]

    init() {
        var rejected: [RejectionReason: Counter] = [:]
        for reason in RejectionReason.allCases {
            rejected[reason] = Counter(label: "notify_events_rejected_total", dimensions: [("reason", reason.rawValue)])
        }
        self.rejected = rejected
    }

    func received(redelivered: Bool) {
        received.increment()
        if redelivered { redeliveries.increment() }
    }

    func batch(size: Int, since started: ContinuousClock.Instant) {
        batchSize.record(size)
        batchDuration.record(since: started)
    }

    func storeTransaction(since started: ContinuousClock.Instant) {
        storeDuration.record(since: started)
    }

    func storeFailed() { storeFailures.increment() }
    func deadLettered() { deadLetters.increment() }
    func published(_ count: Int) { published.increment(by: count) }
    func released(_ count: Int) { released.increment(by: count) }

    func throttled(_ reason: Throttled) {
        switch reason {
        case .owner: throttledOwner.increment()
        case .triggerUser: throttledTriggerUser.increment()
        }
    }

    func rejected(_ reason: RejectionReason) {
        rejected[reason]?.increment()
        rejectedTotal.increment()
    }

    func record(_ outcome: EventOutcome) {
        switch outcome {
        case .created: stored.increment()
        case .duplicate: duplicate.increment()
        case .retracted: retracted.increment()
        case .aggregated: aggregated.increment()
        case .actorRemoved: actorRemoved.increment()
        case .muted: muted.increment()
        case .scheduled: scheduled.increment()
        case .unscheduled: unscheduled.increment()
        case .nothingToRetract: nothingToRetract.increment()
        case .alreadyProcessed: alreadyProcessed.increment()
        case .superseded: superseded.increment()
        case .selfNotification: selfNotification.increment()
        case .resourceDeleted: resourceDeleted.increment()
        }
    }

    func record(_ outcome: UpdateOutcome, of update: EnrichmentUpdate) {
        switch (update, outcome) {
        case (.profile, .applied): profilesApplied.increment()
        case (.profile, .stale): profilesStale.increment()
        case (.resource, .applied): resourcesApplied.increment()
        case (.resource, .stale): resourcesStale.increment()
        }
    }

    /// Notifications retracted because their resource was deleted.
    func retractedForDeletedResource(_ count: Int) { resourceRetractions.increment(by: count) }
}

/// How long notifications take to reach clients, to be shown and to be
/// read (from when the worker stored them), and how many receipts came.
public struct ReceiptMetrics: Sendable {
    let toDeliver = Timer(label: "notify_time_to_deliver_seconds")
    let toSee = Timer(label: "notify_time_to_seen_seconds")
    let toRead = Timer(label: "notify_time_to_read_seconds")
    let delivered = Counter(label: "notify_receipts_total", dimensions: [("kind", "delivered")])
    let seen = Counter(label: "notify_receipts_total", dimensions: [("kind", "seen")])

    /// The process's metrics (the backend is chosen at start-up).
    public static let shared = ReceiptMetrics()

    func recorded(_ kind: Receipt.Kind, after milliseconds: Int64) {
        switch kind {
        case .delivered:
            delivered.increment()
            toDeliver.recordMilliseconds(max(milliseconds, 0))
        case .seen:
            seen.increment()
            toSee.recordMilliseconds(max(milliseconds, 0))
        }
    }

    func read(after milliseconds: Int64) {
        toRead.recordMilliseconds(max(milliseconds, 0))
    }
}
