import KeyValueStore
public import Logging
public import NATS
public import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The worker could not start; the message names what to fix.
public struct WorkerStartupError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Consumes events, validates them, stores each batch in one transaction
/// with its outbox, publishes the per-user messages, then acknowledges.
///
/// Nothing is lost: a bad event is dead-lettered with its reason before it
/// is terminated; a store failure naks the event with backoff and
/// dead-letters it (`store_failed`) only after the consumer's last
/// delivery; an outbox that could not be published is retried before more
/// events are taken, and one left by a crash is published at start-up.
public struct NotificationWorker: Service, CustomStringConvertible {
    enum Source: Sendable {
        case jetStream(PullSubscription, streamCreated: Int64)
        case core(NATSSubscription)
    }

    public let configuration: WorkerConfiguration
    public let repository: NotificationRepository
    let connection: NATSConnection
    let jetStream: JetStream?
    let source: Source
    let validator: EventValidator
    let logger: Logger
    let metrics = WorkerMetrics()

    /// Ensures the stream, dead-letter stream and consumer exist, subscribes,
    /// and publishes any outbox a previous run left behind.
    public static func prepare(
        configuration: WorkerConfiguration,
        connection: NATSConnection,
        repository: NotificationRepository,
        logger: Logger
    ) async throws -> NotificationWorker {
        var logger = logger
        logger[metadataKey: "component"] = "worker"
        let source: Source
        var jetStream: JetStream?
        if configuration.useJetStream {
            let context = try JetStream(connection: connection)
            jetStream = context
            do {
                source = try await retryingTimeouts(for: configuration.startupTimeout, logger: logger) { () async throws(NATSError) in
                    try await jetStreamSource(context, configuration: configuration, logger: logger)
                }
            } catch {
                guard error.code == .noResponders || error.jetStreamCode == 10076 else { throw error }
                throw WorkerStartupError(message: "JetStream is not enabled on the NATS server (\(error.statusText)); start nats-server with -js, or set NATS_JETSTREAM=false for at-most-once core NATS")
            }
        } else {
            let subscription = try connection.subscribe(configuration.subject, queue: configuration.queueGroup)
            logger.warning("consuming with core NATS (NATS_JETSTREAM=false): events published while no worker runs, or lost in a crash, are not recovered", metadata: [
                "subject": .string(configuration.subject), "queue": .string(configuration.queueGroup),
            ])
            source = .core(subscription)
        }
        let worker = NotificationWorker(
            configuration: configuration, repository: repository, connection: connection, jetStream: jetStream,
            source: source,
            validator: EventValidator(
                subjects: EventSubjects(filter: configuration.subject), pictures: repository.pictures, acceptsUpdates: repository.enrichment),
            logger: logger)
        let loop = WorkerLoop(worker)
        try await loop.publishPendingOutboxes()
        return worker
    }

    /// Runs `body` again while JetStream times out, for up to `limit`: a
    /// cluster answers no stream or consumer request while it elects a
    /// leader, as when several workers start together and one creates a
    /// replicated stream.
    private static func retryingTimeouts<T>(
        for limit: Duration, logger: Logger, _ body: () async throws(NATSError) -> T
    ) async throws(NATSError) -> T {
        let deadline = ContinuousClock.now + limit
        while true {
            do {
                return try await body()
            } catch where error.code == .timeout && ContinuousClock.now < deadline {
                logger.warning("JetStream did not answer in time (a cluster may be electing a leader); retrying", metadata: ["error": .string(error.description)])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    private static func jetStreamSource(
        _ context: JetStream, configuration: WorkerConfiguration, logger: Logger
    ) async throws(NATSError) -> Source {
        let (stream, created) = try await context.ensureStream(configuration.stream)
        logger.info(created ? "created stream" : "using stream", metadata: [
            "stream": .string(stream.name), "subjects": .string(stream.subjects.joined(separator: ",")),
            "replicas": .stringConvertible(stream.replicas),
        ])
        if stream.replicas != configuration.stream.replicas {
            logger.warning("the stream exists with another replica count than NATS_STREAM_REPLICAS; notify does not change an existing stream (nats stream edit does)", metadata: [
                "stream": .string(stream.name), "replicas": .stringConvertible(stream.replicas),
                "configured": .stringConvertible(configuration.stream.replicas),
            ])
        }
        if let deadLetters = configuration.deadLetterStream {
            _ = try await context.ensureStream(deadLetters)
        }
        let consumer = try await context.ensureConsumer(stream: stream.name, configuration.consumer)
        logger.info("consuming", metadata: [
            "consumer": .string(consumer.name), "pending": .stringConvertible(consumer.numPending),
            "ack_pending": .stringConvertible(consumer.numAckPending),
        ])
        let subscription = try await context.pullSubscribe(stream: stream.name, consumer: consumer.name)
        return .jetStream(subscription, streamCreated: stream.created)
    }

    public var description: String { "NotificationWorker(\(configuration.subject))" }

    public func run() async throws {
        // Services start after the group traps its signals: from here a
        // SIGTERM is a graceful shutdown.
        logger.info("worker running", metadata: ["nats": .string(connection.connectedURL ?? "-")])
        let releasing = Task { await releaseScheduled() }
        defer { releasing.cancel() }
        let loop = WorkerLoop(self)
        switch source {
        case .jetStream(let subscription, let streamCreated):
            await loop.runJetStream(subscription, streamCreated: streamCreated)
            subscription.close()
        case .core(let subscription):
            await withGracefulShutdownHandler {
                await loop.runCore(subscription)
            } onGracefulShutdown: {
                subscription.drain()
            }
        }
        releasing.cancel()
        await releasing.value
        logger.info("worker stopped")
    }

    /// Releases scheduled notifications as their `deliver_at` comes,
    /// looking four times a second. Every worker does; the store's
    /// conditions release each one once. An outbox whose publish failed is
    /// published by a worker's check for outboxes left behind.
    private func releaseScheduled() async {
        while !Task.isCancelled {
            do {
                let (released, outbox) = try await repository.releaseDue()
                if let outbox {
                    do {
                        for message in outbox.messages { try connection.publish(message.subject, payload: message.body) }
                        metrics.published(outbox.messages.count)
                        metrics.released(released)
                        // Deleted only once the server has them.
                        try await connection.flush()
                        try await repository.deleteOutboxes([outbox.id])
                    } catch {
                        logger.warning("publishing released notifications failed; their outbox is published later", metadata: [
                            "outbox": .string(outbox.id), "error": .string("\(error)"),
                        ])
                    }
                }
                // More may be due at once.
                if released > 0 { continue }
            } catch {
                logger.warning("releasing scheduled notifications failed; retrying", metadata: ["error": .string("\(error)")])
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }
}

/// One message as the pipeline sees it, whichever way it arrived.
enum Delivery: Sendable {
    case jetStream(JetStreamMessage, streamCreated: Int64)
    case core(NATSMessage)

    var subject: String {
        switch self {
        case .jetStream(let message, _): message.subject
        case .core(let message): message.subject
        }
    }

    var payload: [UInt8] {
        switch self {
        case .jetStream(let message, _): message.payload
        case .core(let message): message.payload
        }
    }

    /// Deliveries so far, this one included.
    var deliveryCount: UInt64 {
        switch self {
        case .jetStream(let message, _): message.metadata.deliveryCount
        case .core: 1
        }
    }

    var streamSequence: UInt64? {
        if case .jetStream(let message, _) = self { return message.metadata.streamSequence }
        return nil
    }

    /// The event's place in the stream (`nil` in core NATS).
    var order: EventOrder? {
        if case .jetStream(let message, let created) = self {
            return EventOrder(stream: created, sequence: message.metadata.streamSequence)
        }
        return nil
    }

    func idempotencyKey(for event: NotificationEvent) -> String? {
        switch self {
        case .jetStream(let message, let created):
            IncomingEvent.key(for: event, streamCreated: created, sequence: message.metadata.streamSequence)
        case .core:
            event.eventID.map { "e:" + $0 }
        }
    }
}

/// The worker's loop and its state; lives inside one `run()`.
final class WorkerLoop {
    let worker: NotificationWorker
    private var configuration: WorkerConfiguration { worker.configuration }
    private var logger: Logger { worker.logger }
    private var metrics: WorkerMetrics { worker.metrics }
    /// An outbox could not be published: publish it before taking more.
    private var outboxPending = false
    /// Published outboxes the server has yet to confirm; each moves to
    /// ``undeleted`` once a flush after it comes back, or is published
    /// again when the connection was re-made first.
    private var unconfirmed: [(id: String, receipt: PublishReceipt, at: ContinuousClock.Instant)] = []
    /// Published and confirmed outboxes not deleted yet: they go with the
    /// next batch's transaction, or on their own when the worker is idle.
    private var undeleted: [String] = []
    private var failureStreak = 0
    /// When ``publishOrphanedOutboxes()`` looks next.
    private var nextOrphanCheck = ContinuousClock.now
    /// Rates of new notifications per owner and trigger user, if limited.
    private let throttle: Throttle?

    init(_ worker: NotificationWorker) {
        self.worker = worker
        throttle = worker.configuration.throttle.flatMap { $0.owner == nil && $0.triggerUser == nil ? nil : Throttle(limits: $0) }
    }

    /// Monotonic seconds, for the token buckets.
    private static func seconds() -> Double {
        let (seconds, attoseconds) = (ContinuousClock.now - start).components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    private static let start = ContinuousClock.now

    // MARK: Loops

    func runJetStream(_ subscription: PullSubscription, streamCreated: Int64) async {
        let (validator, batchSize, fetchWait) = (worker.validator, configuration.batchSize, configuration.fetchWait)
        /// Fetches and validates the next batch; runs while the previous
        /// batch is being committed.
        func fetchNext() -> Task<[Prepared], any Error> {
            Task {
                let messages = try await subscription.fetch(maxMessages: batchSize, maxWait: fetchWait)
                return Self.prepare(messages.map { .jetStream($0, streamCreated: streamCreated) }, validator: validator)
            }
        }
        var next: Task<[Prepared], any Error>?
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await confirmOverdue()
            guard await outboxIsClear() else { continue }
            await publishOrphanedOutboxes()
            let current = next ?? fetchNext()
            next = nil
            let batch: [Prepared]
            do {
                batch = try await current.value
            } catch {
                logger.error("fetching events failed; retrying", metadata: ["error": .string("\(error)")])
                await pause()
                continue
            }
            failureStreak = 0
            guard !batch.isEmpty else {
                await confirmAndDelete()
                continue
            }
            if !Task.isShuttingDownGracefully { next = fetchNext() }
            var failed = await commit(batch)
            if failed.contains(where: { $0.1.isStoreFault }) {
                // The store is down (disk full, locked, I/O error, damaged),
                // not these events: hold them and what was fetched ahead until it
                // takes them, without spending their deliveries.
                var held = Self.prepare(failed.map(\.0), validator: validator)
                if let prefetched = next {
                    next = nil
                    let ahead = (try? await prefetched.value) ?? []
                    for prepared in ahead { metrics.received(redelivered: prepared.delivery.deliveryCount > 1) }
                    held += ahead
                }
                failed = await holdUntilStored(held)
            }
            for (delivery, error) in failed {
                guard case .jetStream(let message, _) = delivery else { continue }
                await retryLater(message, delivery: delivery, error: error)
            }
        }
        // Hand back what was fetched ahead, so another worker takes it at once.
        if let next, let prefetched = try? await next.value {
            for case .jetStream(let message, _) in prefetched.map(\.delivery) { try? message.nak() }
        }
        await confirmAndDelete()
    }

    func runCore(_ subscription: NATSSubscription) async {
        while !Task.isCancelled {
            await confirmOverdue()
            guard await outboxIsClear() else { continue }
            await publishOrphanedOutboxes()
            let messages = await subscription.nextBatch(max: configuration.batchSize)
            if messages.isEmpty {  // drained at shutdown
                await confirmAndDelete()
                return
            }
            var failed = await commit(Self.prepare(messages.map { .core($0) }, validator: worker.validator))
            // No redelivery in core NATS: retry here, then dead-letter.
            var attempt: UInt64 = 1
            while !failed.isEmpty, attempt < UInt64(max(configuration.consumer.maxDeliver, 1)) {
                try? await Task.sleep(for: configuration.retryDelay(afterDeliveries: attempt))
                attempt += 1
                failed = await commit(Self.prepare(failed.map(\.0), validator: worker.validator), isRetry: true)
            }
            for (delivery, error) in failed {
                _ = await deadLetter(delivery, EventRejection(.storeFailed, error.description), attempts: attempt)
            }
            if subscription.isIdle { await confirmAndDelete() }
        }
    }

    // MARK: One batch

    /// A delivery after validation.
    enum Prepared: Sendable {
        case rejected(Delivery, EventRejection)
        case selfNotification(Delivery)
        case accepted(Delivery, IncomingEvent)
        case update(Delivery, EnrichmentUpdate)

        var delivery: Delivery {
            switch self {
            case .rejected(let delivery, _), .selfNotification(let delivery), .accepted(let delivery, _), .update(let delivery, _): delivery
            }
        }
    }

    /// What one accepted delivery asks the store for.
    enum Work: Sendable {
        case event(IncomingEvent)
        case update(EnrichmentUpdate)
    }

    /// Decodes and validates; no side effects, so it can run ahead.
    static func prepare(_ deliveries: [Delivery], validator: EventValidator) -> [Prepared] {
        let now = RepositoryClock.milliseconds() / 1000
        return deliveries.map { delivery in
            switch validator.validateInbound(subject: delivery.subject, body: delivery.payload, now: now) {
            case .failure(let rejection):
                return .rejected(delivery, rejection)
            case .success(.update(let update)):
                return .update(delivery, update)
            case .success(.notification(let event)):
                if event.isSelfNotification { return .selfNotification(delivery) }
                return .accepted(delivery, IncomingEvent(event: event, idempotencyKey: delivery.idempotencyKey(for: event), order: delivery.order))
            }
        }
    }

    /// Dead-letters the rejected, stores the accepted in one transaction,
    /// publishes and settles; returns the deliveries whose store
    /// transaction failed, for the caller to retry.
    func commit(_ batch: [Prepared], isRetry: Bool = false) async -> [(Delivery, KeyValueStoreError)] {
        let started = ContinuousClock.now
        defer { metrics.batch(size: batch.count, since: started) }
        var accepted: [(Delivery, Work)] = []
        accepted.reserveCapacity(batch.count)
        for prepared in batch {
            let delivery = prepared.delivery
            if !isRetry { metrics.received(redelivered: delivery.deliveryCount > 1) }
            switch prepared {
            case .rejected(_, let rejection):
                await reject(delivery, rejection)
            case .selfNotification:
                metrics.record(.selfNotification)
                settle(delivery)
            case .accepted(_, var event):
                if let throttle, event.event.kind.effect == .create, event.event.deliverAt == nil, !isRetry {
                    event.throttled = throttle.admit(owner: event.event.owner, trigger: event.event.triggerUser, now: Self.seconds())
                    if let reason = event.throttled { metrics.throttled(reason) }
                }
                accepted.append((delivery, .event(event)))
            case .update(_, let update):
                accepted.append((delivery, .update(update)))
            }
        }
        guard !accepted.isEmpty else { return [] }
        // A store with a transaction limit (DynamoDB) takes the batch in
        // parts, each committed, published and settled before the next.
        let size = min(worker.repository.eventsPerTransaction, accepted.count)
        var failed: [(Delivery, KeyValueStoreError)] = []
        for start in stride(from: 0, to: accepted.count, by: size) {
            failed += await storeOrSplit(Array(accepted[start..<min(start + size, accepted.count)]))
        }
        return failed
    }

    /// Stores `accepted` in one transaction; when that fails for something
    /// other than the store itself, one event at a time, so one bad event
    /// cannot hold back the rest. Returns what failed.
    private func storeOrSplit(_ accepted: [(Delivery, Work)]) async -> [(Delivery, KeyValueStoreError)] {
        do {
            try await store(accepted)
            return []
        } catch {
            metrics.storeFailed()
            logger.error("storing a batch failed", metadata: ["events": .stringConvertible(accepted.count), "error": .string(error.description)])
            guard !error.isStoreFault, accepted.count > 1 else {
                return accepted.map { ($0.0, error) }
            }
            // Possibly one bad event: store one at a time so it cannot hold back the rest.
            var failed: [(Delivery, KeyValueStoreError)] = []
            for entry in accepted {
                do {
                    try await store([entry])
                } catch {
                    failed.append((entry.0, error))
                }
            }
            return failed
        }
    }

    /// Retries `batch` while the store is unavailable, keeping its
    /// messages in progress so the server neither redelivers them nor
    /// counts a delivery. Returns what still failed for another reason, or
    /// everything held when the worker stops.
    private func holdUntilStored(_ batch: [Prepared]) async -> [(Delivery, KeyValueStoreError)] {
        var held = batch
        var attempt = 0
        // Well inside AckWait, so an in-progress signal always lands in time.
        let longest = min(configuration.consumer.ackWait / 3, .seconds(10))
        while true {
            attempt += 1
            let delay = min(Duration.milliseconds(250) * (1 << min(attempt, 8)), longest)
            logger.error("the store is unavailable; holding events and retrying (`notify doctor` checks it)", metadata: [
                "events": .stringConvertible(held.count), "attempt": .stringConvertible(attempt), "retry_in": .string("\(delay)"),
            ])
            for case .jetStream(let message, _) in held.map(\.delivery) {
                do {
                    try message.inProgress()
                } catch {
                    logger.warning("could not extend an event's AckWait; it may be redelivered", metadata: ["error": .string(error.description)])
                }
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            let failed = await commit(held, isRetry: true)
            if failed.isEmpty {
                logger.info("the store is available again", metadata: ["attempts": .stringConvertible(attempt)])
                return []
            }
            if Task.isShuttingDownGracefully || !failed.contains(where: { $0.1.isStoreFault }) { return failed }
            held = Self.prepare(failed.map(\.0), validator: worker.validator)
        }
    }

    private func store(_ entries: [(Delivery, Work)]) async throws(KeyValueStoreError) {
        let started = ContinuousClock.now
        var events: [(Delivery, IncomingEvent)] = []
        var updates: [(Delivery, EnrichmentUpdate)] = []
        for (delivery, work) in entries {
            switch work {
            case .event(let event): events.append((delivery, event))
            case .update(let update): updates.append((delivery, update))
            }
        }
        // Outboxes published and confirmed earlier are deleted in this same transaction.
        noteConfirmations()
        let published = Array(undeleted.prefix(NotificationRepository.maxPublishedOutboxes))
        let result = try await worker.repository.apply(events.map(\.1), updates: updates.map(\.1), publishedOutboxes: published)
        undeleted.removeFirst(published.count)
        metrics.storeTransaction(since: started)
        crashIfAsked(.afterCommit)
        for (index, outcome) in result.outcomes.enumerated() {
            metrics.record(outcome)
            if logger.logLevel <= .debug {
                let event = events[index].1.event
                logger.debug("event applied", metadata: [
                    "subject": .string(events[index].0.subject), "owner": .string(event.owner),
                    "event_id": .string(event.eventID ?? "-"), "outcome": .string("\(outcome)"),
                ])
            }
        }
        for (index, outcome) in result.updates.enumerated() {
            metrics.record(outcome, of: updates[index].1)
            logger.debug("update applied", metadata: ["subject": .string(updates[index].0.subject), "outcome": .string("\(outcome)")])
        }
        if let outbox = result.outbox { publish(outbox) }
        crashIfAsked(.afterPublish)
        for (resource, time) in result.deletedResources {
            try await retractNotifications(on: resource, at: time)
        }
        for (delivery, _) in entries { settle(delivery) }
    }

    /// Retracts every notification about a deleted resource, owner by
    /// owner, each part committed and published like a batch of unlikes;
    /// then forgets the resource's owners. Repeating it (a redelivered
    /// deletion) finds what is left.
    private func retractNotifications(on resource: ResourceReference, at time: Int64) async throws(KeyValueStoreError) {
        let repository = worker.repository
        let retractions = try await repository.retractions(on: resource, at: time)
        var retracted = 0
        for start in stride(from: 0, to: retractions.count, by: repository.eventsPerTransaction) {
            let part = Array(retractions[start..<min(start + repository.eventsPerTransaction, retractions.count)])
            let result = try await repository.apply(part)
            for outcome in result.outcomes {
                if case .retracted = outcome { retracted += 1 }
                if case .actorRemoved = outcome { retracted += 1 }
            }
            if let outbox = result.outbox { publish(outbox) }
        }
        try await repository.forgetOwners(of: resource)
        metrics.retractedForDeletedResource(retracted)
        logger.info("retracted the notifications about a deleted resource", metadata: [
            "resource_type": .string(resource.type), "resource_id": .string(resource.id), "retracted": .stringConvertible(retracted),
        ])
    }

    // MARK: Outbox

    /// Publishes a committed outbox (sent at once, not left buffered) and
    /// forgets it; on failure leaves it in the store for ``outboxIsClear()``.
    private func publish(_ outbox: OutboxBatch) {
        do {
            let receipt = try worker.connection.publishConfirmable { connection throws(NATSError) in
                for message in outbox.messages {
                    try connection.publish(message.subject, payload: message.body)
                }
            }
            metrics.published(outbox.messages.count)
            unconfirmed.append((outbox.id, receipt, .now))
        } catch {
            logger.error("publishing per-user messages failed; they stay in the outbox and are retried before more events are taken", metadata: [
                "outbox": .string(outbox.id), "error": .string(error.description),
            ])
            outboxPending = true
        }
        worker.connection.sendBuffered()
    }

    /// Moves the outboxes the server confirmed to ``undeleted``; an
    /// outbox published on a connection since re-made is published again.
    private func noteConfirmations() {
        var lost = 0
        unconfirmed.removeAll { entry in
            switch worker.connection.confirmation(of: entry.receipt) {
            case .confirmed:
                undeleted.append(entry.id)
                return true
            case .pending:
                return false
            case .unknown:
                lost += 1
                return true
            }
        }
        if lost > 0 {
            logger.warning("the NATS connection was re-made before the server confirmed published per-user messages; publishing them again", metadata: [
                "outboxes": .stringConvertible(lost),
            ])
            outboxPending = true
        }
    }

    /// Waits for the server to confirm what was published (a flush), then
    /// deletes the confirmed outboxes. Called when the worker is idle.
    private func confirmAndDelete() async {
        if !unconfirmed.isEmpty { await confirm() }
        if !undeleted.isEmpty { await deleteOutboxes() }
    }

    /// Flushes when an outbox has waited for confirmation over a second
    /// (a busy worker's own sends normally confirm within milliseconds).
    private func confirmOverdue() async {
        guard let oldest = unconfirmed.first?.at, ContinuousClock.now - oldest > .seconds(1) else { return }
        await confirm()
    }

    /// A flush, then ``noteConfirmations()``; a flush that fails keeps the
    /// outboxes for the next try (or, after a reconnect, publishing again).
    private func confirm() async {
        do {
            try await worker.connection.flush()
        } catch {
            logger.warning("the NATS server did not confirm published per-user messages; their outboxes are kept", metadata: ["error": .string(error.description)])
        }
        noteConfirmations()
    }

    private func deleteOutboxes() async {
        do {
            try await worker.repository.deleteOutboxes(undeleted)
            undeleted.removeAll()
        } catch {
            logger.warning("deleting published outbox rows failed; retrying later (a restart would publish them again)", metadata: ["error": .string(error.description)])
        }
    }

    /// Publishes the outboxes left in the store, oldest first, except the
    /// ones this worker published and has yet to delete: all of them (at
    /// start-up, and after a failed publish), or those committed before
    /// `committedBefore` (Unix milliseconds).
    func publishPendingOutboxes(committedBefore: UInt64? = nil) async throws {
        // All of them: this worker's unconfirmed ones are published again too.
        if committedBefore == nil { unconfirmed.removeAll() }
        let waiting = Set(unconfirmed.map(\.id))
        while true {
            let batches = try await worker.repository.pendingOutboxes(limit: 100, committedBefore: committedBefore)
                .filter { !undeleted.contains($0.id) && !waiting.contains($0.id) }
            if batches.isEmpty { break }
            for batch in batches {
                for message in batch.messages {
                    try worker.connection.publish(message.subject, payload: message.body)
                }
                metrics.published(batch.messages.count)
            }
            // Deleted only once the server has them.
            try await worker.connection.flush()
            try await worker.repository.deleteOutboxes(batches.map(\.id))
            for batch in batches {
                logger.info(committedBefore == nil ? "published an outbox left from before" : "published an outbox another worker committed but did not publish (it stopped in between)", metadata: [
                    "outbox": .string(batch.id), "messages": .stringConvertible(batch.messages.count),
                ])
            }
        }
    }

    /// When several workers share the store, one that dies between its
    /// commit and its publish leaves an outbox nobody else would publish
    /// until a worker restarts. Every fifth of
    /// ``WorkerConfiguration/orphanedOutboxAge`` each worker publishes the
    /// outboxes older than that age: its own are published at once, so an
    /// old one is a stopped worker's. Per-user messages are at-least-once;
    /// gateways drop a repeat.
    private func publishOrphanedOutboxes() async {
        let now = ContinuousClock.now
        guard now >= nextOrphanCheck else { return }
        nextOrphanCheck = now + configuration.orphanedOutboxAge / 5
        let age = configuration.orphanedOutboxAge
        let cutoff = worker.repository.currentMilliseconds - age.components.seconds * 1_000 - age.components.attoseconds / 1_000_000_000_000_000
        do {
            try await publishPendingOutboxes(committedBefore: UInt64(max(cutoff, 0)))
        } catch {
            logger.warning("publishing outboxes left by another worker failed; retrying later", metadata: ["error": .string("\(error)")])
        }
    }

    /// `true` when nothing is waiting to be published; otherwise tries to
    /// publish it and pauses on failure.
    private func outboxIsClear() async -> Bool {
        guard outboxPending else { return true }
        // Delete what was published first, so it is not published again.
        if !undeleted.isEmpty { await deleteOutboxes() }
        do {
            try await publishPendingOutboxes()
            outboxPending = false
            failureStreak = 0
            return true
        } catch {
            logger.error("the outbox still cannot be published", metadata: ["error": .string("\(error)")])
            await pause()
            return false
        }
    }

    // MARK: Settling

    private func settle(_ delivery: Delivery) {
        guard case .jetStream(let message, _) = delivery else { return }
        do {
            try message.ack()
        } catch {
            // Redelivery is harmless: the idempotency marker recognises it.
            logger.warning("ack failed; the event will be redelivered and recognised", metadata: [
                "stream_seq": .stringConvertible(message.metadata.streamSequence), "error": .string(error.description),
            ])
        }
    }

    private func reject(_ delivery: Delivery, _ rejection: EventRejection) async {
        metrics.rejected(rejection.reason)
        logger.warning("event rejected", metadata: [
            "subject": .string(delivery.subject), "reason": .string(rejection.reason.rawValue),
            "detail": .string(rejection.detail), "stream_seq": .string(delivery.streamSequence.map(String.init) ?? "-"),
        ])
        let published = await deadLetter(delivery, rejection, attempts: 1)
        guard case .jetStream(let message, _) = delivery else { return }
        do {
            if published {
                try message.term()
            } else {
                try message.nak(delay: configuration.retryDelay(afterDeliveries: message.metadata.deliveryCount))
            }
        } catch {
            logger.warning("settling a rejected event failed; it will be redelivered", metadata: ["error": .string(error.description)])
        }
    }

    /// A stored failure: nak with backoff, or after the last delivery
    /// dead-letter it (`store_failed`) and terminate.
    private func retryLater(_ message: JetStreamMessage, delivery: Delivery, error: KeyValueStoreError) async {
        let deliveries = message.metadata.deliveryCount
        let maxDeliver = configuration.consumer.maxDeliver
        do {
            if maxDeliver > 0, deliveries >= UInt64(maxDeliver) {
                if await deadLetter(delivery, EventRejection(.storeFailed, error.description), attempts: deliveries) {
                    try message.term()
                } else {
                    try message.nak(delay: configuration.maxRetryDelay)
                }
            } else {
                try message.nak(delay: configuration.retryDelay(afterDeliveries: deliveries))
            }
        } catch {
            logger.warning("nak failed; the event will be redelivered after AckWait", metadata: ["error": .string(error.description)])
        }
    }

    /// Publishes the original body to `dlq.<subject>` with the reason.
    /// `false` when that failed (the caller must not drop the event).
    ///
    /// A body too large to go out with the headers in one message (the
    /// server's max payload, 1 MiB by default) is cut to what fits, and
    /// `Notify-Body-Truncated` gives its full size; the whole event stays
    /// in the stream at `Notify-Stream-Sequence` until `NATS_STREAM_MAX_AGE`.
    private func deadLetter(_ delivery: Delivery, _ rejection: EventRejection, attempts: UInt64) async -> Bool {
        let subject = configuration.deadLetterSubject(for: delivery.subject)
        var headers: NATSHeaders = [
            "Notify-Error": rejection.reason.rawValue,
            "Notify-Attempts": String(attempts),
            "Notify-Detail": Self.headerValue(rejection.detail),
        ]
        if let sequence = delivery.streamSequence { headers.append("Notify-Stream-Sequence", String(sequence)) }
        var payload = delivery.payload
        let room = worker.connection.maxPayload - Self.headerBytes(headers) - 64
        if payload.count > room {
            headers.append("Notify-Body-Truncated", String(payload.count))
            payload = Array(payload.prefix(max(room, 0)))
        }
        do {
            if let jetStream = worker.jetStream, configuration.deadLetterStream != nil {
                _ = try await jetStream.publish(subject, payload: payload, headers: headers)
            } else {
                try worker.connection.publish(subject, payload: payload, headers: headers)
            }
            metrics.deadLettered()
            return true
        } catch {
            logger.error("dead-lettering failed; the event stays in the stream and is retried", metadata: [
                "subject": .string(delivery.subject), "reason": .string(rejection.reason.rawValue), "error": .string(error.description),
            ])
            return false
        }
    }

    /// The size of `headers` on the wire (`NATS/1.0`, one line each, a blank line).
    static func headerBytes(_ headers: NATSHeaders) -> Int {
        headers.fields.reduce(12) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
    }

    /// A header value without line breaks or other control characters.
    static func headerValue(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.prefix(300).map { $0.properties.generalCategory == .control ? " " : $0 }))
    }

    // MARK: Helpers

    private func pause() async {
        failureStreak += 1
        let delay = min(Duration.milliseconds(100) * (1 << min(failureStreak, 6)), .seconds(5))
        try? await Task.sleep(for: delay)
    }

    private func crashIfAsked(_ point: WorkerConfiguration.CrashPoint) {
        guard configuration.crashPoint == point else { return }
        logger.critical("crashing on purpose (crash point \(point.rawValue))")
        kill(getpid(), SIGKILL)
    }
}


