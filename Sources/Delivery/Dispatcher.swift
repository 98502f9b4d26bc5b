import Foundation
import JSON
public import Logging
public import NATS
public import Notifications
public import ServiceLifecycle

/// `notify dispatcher`: delivers notifications beyond the app.
///
/// Two loops share one stream (see ``DeliveryConfiguration``):
/// 1. each announced notification becomes one job per channel its owner
///    has an address for, has not muted, and this dispatcher can send on;
///    the notification records each as `pending`;
/// 2. each job is sent by its channel's ``ChannelSender``. A job whose
///    channel already says `sent` is acknowledged without sending again
///    (job id = notification id + channel); a transient failure is retried
///    after an exponential, jittered delay (or the server's `Retry-After`);
///    a permanent one, or the last try, is dead-lettered with its reason.
///    Every outcome is stored on the notification (`deliveries`).
///
/// Any number of dispatchers share the two durable consumers.
public final class Dispatcher: Service, CustomStringConvertible {
    public let configuration: DeliveryConfiguration
    let repository: NotificationRepository
    let jetStream: JetStream
    let senders: [DeliveryChannel: any ChannelSender]
    let logger: Logger
    let metrics = DeliveryMetrics()
    private let dispatches: PullSubscription
    private let jobs: PullSubscription

    private init(
        configuration: DeliveryConfiguration, repository: NotificationRepository, jetStream: JetStream,
        senders: [DeliveryChannel: any ChannelSender], dispatches: PullSubscription, jobs: PullSubscription, logger: Logger
    ) {
        self.configuration = configuration
        self.repository = repository
        self.jetStream = jetStream
        self.senders = senders
        self.dispatches = dispatches
        self.jobs = jobs
        self.logger = logger
    }

    /// Creates the stream (when missing) on its own: the worker calls this
    /// before it announces anything, so no announcement goes unrecorded.
    public static func ensureStream(_ configuration: DeliveryConfiguration, connection: NATSConnection) async throws(NATSError) {
        let jetStream = try JetStream(connection: connection)
        _ = try await jetStream.ensureStream(configuration.stream)
    }

    /// Creates the stream and consumers when missing and binds to them.
    public static func prepare(
        configuration: DeliveryConfiguration, connection: NATSConnection, repository: NotificationRepository,
        senders: [any ChannelSender], logger: Logger
    ) async throws(NATSError) -> Dispatcher {
        let jetStream = try JetStream(connection: connection)
        _ = try await jetStream.ensureStream(configuration.stream)
        _ = try await jetStream.ensureConsumer(stream: configuration.streamName, configuration.dispatchConsumer)
        _ = try await jetStream.ensureConsumer(stream: configuration.streamName, configuration.jobConsumer)
        let dispatches = try await jetStream.pullSubscribe(stream: configuration.streamName, consumer: configuration.dispatchConsumer.durableName)
        let jobs = try await jetStream.pullSubscribe(stream: configuration.streamName, consumer: configuration.jobConsumer.durableName)
        return Dispatcher(
            configuration: configuration, repository: repository, jetStream: jetStream,
            senders: Dictionary(senders.map { ($0.channel, $0) }, uniquingKeysWith: { first, _ in first }),
            dispatches: dispatches, jobs: jobs, logger: logger)
    }

    public var description: String { "Dispatcher(\(senders.keys.sorted().map(\.rawValue).joined(separator: ",")))" }

    public func run() async throws {
        logger.info("dispatcher running", metadata: [
            "channels": .string(senders.keys.sorted().map(\.rawValue).joined(separator: ",")),
            "stream": .string(configuration.streamName),
        ])
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.dispatchLoop() }
            group.addTask { await self.sendLoop() }
        }
        dispatches.close()
        jobs.close()
        logger.info("dispatcher stopped")
    }

    private var running: Bool { !Task.isShuttingDownGracefully && !Task.isCancelled }

    // MARK: Announcements → jobs

    private func dispatchLoop() async {
        while running {
            let messages: [JetStreamMessage]
            do {
                messages = try await dispatches.fetch(maxMessages: 64, maxWait: configuration.fetchWait)
            } catch {
                if error.code != .timeout {
                    logger.warning("fetching announcements failed; retrying", metadata: ["error": .string(error.description)])
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
                }
                continue
            }
            for message in messages { await dispatch(message) }
        }
    }

    /// Queues one job per channel the notification's owner can be reached on.
    func dispatch(_ message: JetStreamMessage) async {
        guard let target = JobTarget(json: message.payload) else {
            logger.error("an announcement is not {\"owner\",\"id\"}; dropped", metadata: ["sequence": .stringConvertible(message.metadata.streamSequence)])
            try? message.term()
            return
        }
        do {
            // Retracted or folded away before it was dispatched: nothing to send.
            guard let record = try await repository.notification(owner: target.owner, id: target.id) else {
                try? message.ack()
                return
            }
            let (addresses, preferences) = try await repository.deliveryTargets(owner: target.owner)
            let channels = senders.keys.sorted().filter { channel in
                addresses.has(channel) && !preferences.mutedChannels.contains(channel)
                    && !record.deliveries.contains { $0.channel == channel && $0.status.isFinal }
            }
            guard !channels.isEmpty else {
                try? message.ack()
                return
            }
            let now = repository.currentMilliseconds
            let fresh = channels.filter { channel in !record.deliveries.contains { $0.channel == channel } }
            try await repository.recordDelivery(
                fresh.map { ChannelDelivery(channel: $0, status: .pending, attempts: 0, at: now) }, owner: target.owner, id: target.id)
            for channel in channels {
                _ = try await jetStream.publish(
                    configuration.jobSubject(channel), payload: message.payload, messageID: target.id + "." + channel.rawValue)
                metrics.queued(channel)
            }
            try? message.ack()
        } catch {
            logger.warning("dispatching a notification failed; retrying", metadata: [
                "owner": .string(target.owner), "id": .string(target.id), "error": .string("\(error)"),
            ])
            try? message.nak(delay: .seconds(2))
        }
    }

    // MARK: Jobs → channels

    private func sendLoop() async {
        while running {
            let messages: [JetStreamMessage]
            do {
                messages = try await jobs.fetch(maxMessages: configuration.concurrency, maxWait: configuration.fetchWait)
            } catch {
                if error.code != .timeout {
                    logger.warning("fetching delivery jobs failed; retrying", metadata: ["error": .string(error.description)])
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
                }
                continue
            }
            await withTaskGroup(of: Void.self) { group in
                for message in messages { group.addTask { await self.send(message) } }
            }
        }
    }

    /// Sends one job and settles it.
    func send(_ message: JetStreamMessage) async {
        guard let target = JobTarget(json: message.payload), let channel = message.subject.split(separator: ".").last.flatMap({ DeliveryChannel(rawValue: String($0)) })
        else {
            logger.error("a delivery job cannot be read; dropped", metadata: ["subject": .string(message.subject)])
            try? message.term()
            return
        }
        let delivery = Int(message.metadata.deliveryCount)
        let jobID = target.id + "." + channel.rawValue
        do {
            guard let record = try await repository.notification(owner: target.owner, id: target.id) else {
                // Retracted meanwhile: too late to unsend what went, nothing more to send.
                metrics.skipped(channel)
                try? message.ack()
                return
            }
            let recorded = record.deliveries.first { $0.channel == channel }
            if recorded?.status == .sent || recorded?.status == .failed {
                try? message.ack()
                return
            }
            // The try number counts the tries whose outcome was stored, not
            // JetStream's deliveries: a redelivery after a store error or a
            // stopped dispatcher is not a try.
            let attempt = Int(recorded?.attempts ?? 0) + 1
            // JetStream delivers the job no more after this: a retryable
            // failure now is dead-lettered rather than dropped.
            let lastDelivery = delivery >= configuration.jobConsumer.maxDeliver
            guard let sender = senders[channel] else {
                await giveUp(message, target: target, channel: channel, attempts: attempt, reason: "not_configured: this dispatcher has no \(channel.rawValue) sender")
                return
            }
            guard attempt <= configuration.maxAttempts else {
                await giveUp(message, target: target, channel: channel, attempts: attempt - 1, reason: "interrupted: the last try's outcome was not stored (the dispatcher stopped)")
                return
            }
            let (addresses, preferences) = try await repository.deliveryTargets(owner: target.owner)
            guard addresses.has(channel), !preferences.mutedChannels.contains(channel) else {
                // Opted out, or the address was removed, after the job was queued.
                metrics.skipped(channel)
                try await repository.recordDelivery(
                    [ChannelDelivery(channel: channel, status: .skipped, attempts: Int64(attempt - 1), error: "the user turned this channel off", at: repository.currentMilliseconds)],
                    owner: target.owner, id: target.id)
                try? message.ack()
                return
            }
            let started = ContinuousClock.now
            let outcome = await sender.send(DeliveryRequest(record: record, addresses: addresses, jobID: jobID, attempt: attempt))
            metrics.tried(channel, since: started)
            let now = repository.currentMilliseconds
            switch outcome {
            case .sent:
                try await repository.recordDelivery(
                    [ChannelDelivery(channel: channel, status: .sent, attempts: Int64(attempt), at: now)], owner: target.owner, id: target.id)
                metrics.sent(channel, lag: Double(now - record.receivedAt) / 1000)
                try? message.ack()
            case .transient(let reason, let retryAfter) where attempt < configuration.maxAttempts && !lastDelivery:
                let delay = retryAfter.map { min($0, configuration.maxRetryAfter) } ?? configuration.retryDelay(after: attempt)
                try await repository.recordDelivery(
                    [ChannelDelivery(channel: channel, status: .retrying, attempts: Int64(attempt), error: reason, at: now)],
                    owner: target.owner, id: target.id)
                metrics.retried(channel, reason: outcome.reasonLabel)
                logger.debug("delivery failed; retrying", metadata: [
                    "job": .string(jobID), "attempt": .stringConvertible(attempt), "reason": .string(reason), "delay": .stringConvertible(delay),
                ])
                try? message.nak(delay: delay)
            case .transient(let reason, _), .permanent(let reason):
                await giveUp(message, target: target, channel: channel, attempts: attempt, reason: reason)
            }
        } catch {
            // The store failed: the job is delivered again; the try counts
            // only if its outcome was stored.
            logger.warning("a delivery job could not be handled; retrying", metadata: ["job": .string(jobID), "error": .string("\(error)")])
            try? message.nak(delay: .seconds(5))
        }
    }

    /// Dead-letters a job with its reason, records it as failed, and
    /// settles it; if the dead letter cannot be published, the job is
    /// redelivered instead (never dropped).
    private func giveUp(_ message: JetStreamMessage, target: JobTarget, channel: DeliveryChannel, attempts: Int, reason: String) async {
        var json = JSONWriter()
        json.raw("{\"owner\":"); json.string(target.owner)
        json.raw(",\"id\":"); json.string(target.id)
        json.raw(",\"channel\":"); json.string(channel.rawValue)
        json.raw(",\"attempts\":"); json.integer(Int64(attempts))
        json.raw(",\"reason\":"); json.string(reason)
        json.raw("}")
        do {
            _ = try await jetStream.publish(
                configuration.deadLetterSubject(channel), payload: json.bytes,
                headers: ["Notify-Reason": DeliveryOutcome.label(reason)], messageID: "dead." + target.id + "." + channel.rawValue)
            try await repository.recordDelivery(
                [ChannelDelivery(channel: channel, status: .failed, attempts: Int64(attempts), error: reason, at: repository.currentMilliseconds)],
                owner: target.owner, id: target.id)
            metrics.failed(channel, reason: DeliveryOutcome.label(reason))
            logger.warning("delivery given up; dead-lettered", metadata: [
                "owner": .string(target.owner), "id": .string(target.id), "channel": .string(channel.rawValue),
                "attempts": .stringConvertible(attempts), "reason": .string(reason),
            ])
            try? message.term()
        } catch {
            logger.error("dead-lettering a delivery job failed; it is redelivered", metadata: ["id": .string(target.id), "error": .string("\(error)")])
            try? message.nak(delay: .seconds(5))
        }
    }
}

/// `{"owner":…,"id":…}`: the notification an announcement or job is about.
struct JobTarget {
    let owner: String
    let id: String

    init?(json bytes: [UInt8]) {
        guard case .object(let fields)? = try? JSONParser.parse(bytes), case .string(let owner)? = fields["owner"],
              case .string(let id)? = fields["id"], !owner.isEmpty, !id.isEmpty else { return nil }
        self.owner = owner
        self.id = id
    }
}
