public import NATS

/// Everything the worker needs to know, validated before it starts.
public struct WorkerConfiguration: Sendable {
    /// What the worker consumes (`NATS_SUBJECT`).
    public var subject: String
    /// Prefix of the per-user subjects (`USER_SUBJECT_PREFIX`).
    public var userSubjectPrefix: String
    /// Dead letters go to `<prefix>.<original subject>`.
    public var deadLetterPrefix: String
    /// `false`: a core NATS queue subscription (at-most-once) instead of a
    /// JetStream durable consumer (at-least-once).
    public var useJetStream: Bool
    /// The stream capturing ``subject`` (created when missing).
    public var stream: StreamConfiguration
    /// The stream keeping dead letters (created when missing), or `nil` to
    /// publish dead letters on core NATS only.
    public var deadLetterStream: StreamConfiguration?
    /// The durable pull consumer shared by every worker.
    public var consumer: ConsumerConfiguration
    /// Queue group of the core NATS mode.
    public var queueGroup: String
    /// Most events per batch (one store transaction per batch).
    public var batchSize: Int
    /// How long an idle worker's fetch waits for events.
    public var fetchWait: Duration
    /// First and longest delay before a failed event is redelivered.
    public var retryDelay: Duration
    public var maxRetryDelay: Duration
    /// How long start-up retries JetStream requests that time out.
    public var startupTimeout: Duration
    /// How old another worker's unpublished outbox must be before this
    /// worker publishes it; it looks five times as often (one store query).
    public var orphanedOutboxAge: Duration
    /// Rates over which new notifications fold into one per kind (per
    /// worker); `nil`: no limit.
    public var throttle: ThrottleLimits?
    /// For tests of crash recovery only: kill the process at this point.
    public var crashPoint: CrashPoint?

    /// Where a test asks the worker to die.
    public enum CrashPoint: String, Sendable, CaseIterable {
        /// After the batch's transaction committed, before its outbox is published.
        case afterCommit = "after-commit"
        /// After the outbox was published, before the messages are acknowledged.
        case afterPublish = "after-publish"
    }

    public init(
        subject: String = "notifications.>",
        userSubjectPrefix: String = "users",
        deadLetterPrefix: String = "dlq",
        useJetStream: Bool = true,
        streamName: String = "NOTIFICATIONS",
        streamStorage: StreamConfiguration.Storage = .file,
        streamMaxAge: Duration? = .seconds(7 * 86_400),
        streamReplicas: Int = 1,
        consumerName: String = "notification-worker",
        ackWait: Duration = .seconds(30),
        maxDeliver: Int = 5,
        backoff: [Duration] = [],
        queueGroup: String = "notification-workers",
        batchSize: Int = 1_024,
        fetchWait: Duration = .milliseconds(500),
        retryDelay: Duration = .seconds(1),
        maxRetryDelay: Duration = .seconds(60),
        orphanedOutboxAge: Duration = .seconds(10),
        startupTimeout: Duration = .seconds(60),
        crashPoint: CrashPoint? = nil
    ) {
        self.subject = subject
        self.userSubjectPrefix = userSubjectPrefix
        self.deadLetterPrefix = deadLetterPrefix
        self.useJetStream = useJetStream
        self.stream = StreamConfiguration(name: streamName, subjects: [subject], storage: streamStorage, maxAge: streamMaxAge, replicas: streamReplicas)
        self.deadLetterStream = StreamConfiguration(
            name: streamName + "_DLQ", subjects: [deadLetterPrefix + "." + subject], storage: streamStorage, maxAge: .seconds(30 * 86_400),
            replicas: streamReplicas)
        self.consumer = ConsumerConfiguration(
            durableName: consumerName, filterSubject: subject, ackWait: ackWait, maxDeliver: maxDeliver, backoff: backoff)
        self.queueGroup = queueGroup
        self.batchSize = batchSize
        self.fetchWait = fetchWait
        self.retryDelay = retryDelay
        self.maxRetryDelay = maxRetryDelay
        self.orphanedOutboxAge = orphanedOutboxAge
        self.startupTimeout = startupTimeout
        self.crashPoint = crashPoint
    }

    /// The dead-letter subject of an event published on `subject`.
    public func deadLetterSubject(for subject: String) -> String {
        deadLetterPrefix + "." + subject
    }

    /// The delay before redelivery after `deliveries` failed attempts.
    public func retryDelay(afterDeliveries deliveries: UInt64) -> Duration {
        let exponent = Int(min(max(deliveries, 1) - 1, 16))
        let delay = retryDelay * (1 << exponent)
        return min(delay, maxRetryDelay)
    }
}
