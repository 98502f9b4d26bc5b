public import NATS
import Notifications

/// The dispatcher's stream, consumers and retry policy.
///
/// Everything travels on one JetStream stream (`NOTIFICATIONS_DELIVERY`,
/// subjects `<prefix>.>`):
/// - `<prefix>.dispatch`: the worker announces each new notification of a
///   user (from its outbox, so none is missed);
/// - `<prefix>.job.<channel>`: one job per channel the user can be reached
///   on, with `Nats-Msg-Id` `<notification id>.<channel>`;
/// - `<prefix>.dead.<channel>`: jobs given up on, with the reason.
public struct DeliveryConfiguration: Sendable {
    public var streamName: String
    public var subjectPrefix: String
    public var storage: StreamConfiguration.Storage
    public var replicas: Int
    /// How long jobs and dead letters stay in the stream.
    public var maxAge: Duration
    /// Tries per job before it is dead-lettered.
    public var maxAttempts: Int
    /// The first retry's delay; each next one doubles, up to ``maxBackoff``,
    /// with full jitter (a random delay between half and all of it).
    public var backoff: Duration
    public var maxBackoff: Duration
    /// The longest `Retry-After` honoured (a server asking for more is
    /// retried after this).
    public var maxRetryAfter: Duration
    /// Jobs sent at once.
    public var concurrency: Int
    /// How long a fetch waits when nothing is queued.
    public var fetchWait: Duration

    public init(
        streamName: String = "NOTIFICATIONS_DELIVERY", subjectPrefix: String = "delivery", storage: StreamConfiguration.Storage = .file,
        replicas: Int = 1, maxAge: Duration = .seconds(7 * 86_400), maxAttempts: Int = 8, backoff: Duration = .seconds(2),
        maxBackoff: Duration = .seconds(600), maxRetryAfter: Duration = .seconds(3_600), concurrency: Int = 32,
        fetchWait: Duration = .seconds(1)
    ) {
        self.streamName = streamName
        self.subjectPrefix = subjectPrefix
        self.storage = storage
        self.replicas = replicas
        self.maxAge = maxAge
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.maxBackoff = maxBackoff
        self.maxRetryAfter = maxRetryAfter
        self.concurrency = concurrency
        self.fetchWait = fetchWait
    }

    /// Where the worker announces new notifications.
    public var dispatchSubject: String { subjectPrefix + ".dispatch" }
    func jobSubject(_ channel: DeliveryChannel) -> String { subjectPrefix + ".job." + channel.rawValue }
    func deadLetterSubject(_ channel: DeliveryChannel) -> String { subjectPrefix + ".dead." + channel.rawValue }

    public var stream: StreamConfiguration {
        StreamConfiguration(
            name: streamName, subjects: [subjectPrefix + ".>"], storage: storage, maxAge: maxAge,
            duplicateWindow: .seconds(600), replicas: replicas)
    }

    var dispatchConsumer: ConsumerConfiguration {
        ConsumerConfiguration(durableName: "delivery-dispatcher", filterSubject: dispatchSubject, ackWait: .seconds(30), maxDeliver: -1)
    }

    /// Jobs are redelivered on each `nak`; two deliveries on top of the
    /// tries let a dispatcher that stopped mid-try dead-letter the job.
    var jobConsumer: ConsumerConfiguration {
        ConsumerConfiguration(
            durableName: "delivery-sender", filterSubject: subjectPrefix + ".job.>", ackWait: .seconds(90),
            maxDeliver: maxAttempts + 2, maxAckPending: concurrency * 64)
    }

    /// The delay before try `attempt + 1`: exponential with full jitter.
    func retryDelay(after attempt: Int, random: Double = Double.random(in: 0...1)) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let ceiling = min(backoff * (1 << exponent), maxBackoff)
        return ceiling * (0.5 + 0.5 * random)
    }
}
