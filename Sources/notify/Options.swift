import ArgumentParser

/// Flags every command accepts; each overrides its environment variable.
struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("nats-url"), help: "NATS server URL(s), comma-separated. [env: NATS_URL, default: nats://127.0.0.1:4222]")
    var natsURL: String?

    @Option(name: .customLong("nats-creds-file"), help: "A .creds file for NATS authentication (e.g. NGS). [env: NATS_CREDS_FILE]")
    var natsCredentialsFile: String?

    @Option(name: .customLong("nats-subject"), help: "Subjects the worker consumes. [env: NATS_SUBJECT, default: notifications.>]")
    var subject: String?

    @Option(name: .customLong("user-subject-prefix"), help: "Prefix of per-user subjects <prefix>.<owner>.notifications. [env: USER_SUBJECT_PREFIX, default: users]")
    var userSubjectPrefix: String?

    @Option(name: .customLong("room-subject-prefix"), help: "Prefix of room subjects <prefix>.channel.<id>.notifications and <prefix>.global.notifications. [env: ROOM_SUBJECT_PREFIX, default: rooms]")
    var roomSubjectPrefix: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, warning or error. [env: LOG_LEVEL, default: info]")
    var logLevel: String?

    @Option(name: .customLong("environment"), help: "development or production (JSON logs). [env: ENVIRONMENT, default: development]")
    var environment: String?
}

/// Flags of the store.
struct StoreOptions: ParsableArguments {
    @Option(name: .customLong("store"), help: "sqlite (embedded, in DATA_DIR) or dynamodb. [env: STORE, default: sqlite]")
    var store: String?

    @Option(name: .customLong("dynamodb-endpoint"), help: "DynamoDB endpoint, for local emulators; AWS's regional endpoint when unset. [env: DYNAMODB_ENDPOINT]")
    var dynamoDBEndpoint: String?

    @Option(name: .customLong("data-dir"), help: "Directory of the embedded store. [env: DATA_DIR, default: ./data]")
    var dataDirectory: String?

    @Option(name: .customLong("table-name"), help: "Store table name (SQLite table or DynamoDB table). [env: NOTIF_TABLE_NAME, default: notifications]")
    var tableName: String?

    @Option(name: .customLong("sqlite-synchronous"), help: "full (survives power loss) or normal (survives a crash). [env: SQLITE_SYNCHRONOUS, default: full]")
    var synchronous: String?

    @Option(name: .customLong("ttl-days"), help: "Days a notification is kept; 0 keeps it until retracted. [env: NOTIF_TTL_DAYS, default: 90]")
    var retentionDays: Int?

    @Option(name: .customLong("read-ttl-days"), help: "Days a notification is kept once read (at most --ttl-days). [env: READ_TTL_DAYS, default: as --ttl-days]")
    var readRetentionDays: Int?

    @Option(name: .customLong("aggregate-window"), help: "How long likes and follows on one resource fold into one notification; 0 turns it off. [env: AGGREGATE_WINDOW, default: 1h]")
    var aggregateWindow: String?

    @Option(name: .customLong("enrichment"), help: "Keep actor profiles and resource previews, and show them current on every read. [env: ENRICHMENT, default: true]")
    var enrichment: Bool?

    @Option(name: .customLong("cdn-base-url"), help: "Base URL that picture paths (user_picture: /avatars/1.jpg) are served from; without it only absolute URLs are accepted. [env: CDN_BASE_URL]")
    var cdnBaseURL: String?
}

/// Flags of the gateway. The secret is read from JWT_SECRET only: a flag
/// would show it in the process list.
struct GatewayOptions: ParsableArguments {
    @Option(name: .customLong("port"), help: "Listen port. [env: PORT, default: 8080]")
    var port: Int?

    @Option(name: .customLong("host"), help: "Listen address. [env: HOST, default: 0.0.0.0]")
    var host: String?

    @Option(name: .customLong("allowed-origins"), help: "Origins allowed for CORS and WebSockets, comma-separated; required in production. [env: ALLOWED_ORIGINS]")
    var allowedOrigins: String?

    @Option(name: .customLong("jwt-issuer"), help: "Required iss claim. [env: JWT_ISSUER]")
    var jwtIssuer: String?

    @Option(name: .customLong("jwt-audience"), help: "Required aud claim. [env: JWT_AUDIENCE]")
    var jwtAudience: String?

    @Option(name: .customLong("max-connections-per-user"), help: "Open WebSockets and SSE streams per user. [env: MAX_CONNECTIONS_PER_USER, default: 20]")
    var maxConnectionsPerUser: Int?

    @Option(name: .customLong("max-rooms-per-connection"), help: "Channel and global rooms one WebSocket or SSE stream may join. [env: MAX_ROOMS_PER_CONNECTION, default: 32]")
    var maxRoomsPerConnection: Int?
}

/// Flags of the worker.
struct WorkerOptions: ParsableArguments {
    @Option(name: .customLong("throttle-owner-per-minute"), help: "New notifications a minute per owner before they fold into one per kind; 0 is no limit. [env: THROTTLE_OWNER_PER_MINUTE, default: 0]")
    var throttleOwnerPerMinute: Int?

    @Option(name: .customLong("throttle-owner-burst"), help: "How many may come at once before that rate applies. [env: THROTTLE_OWNER_BURST, default: the rate]")
    var throttleOwnerBurst: Int?

    @Option(name: .customLong("throttle-actor-per-minute"), help: "New notifications a minute from one trigger user to one owner; 0 is no limit. [env: THROTTLE_ACTOR_PER_MINUTE, default: 0]")
    var throttleActorPerMinute: Int?

    @Option(name: .customLong("throttle-actor-burst"), help: "How many may come at once before that rate applies. [env: THROTTLE_ACTOR_BURST, default: the rate]")
    var throttleActorBurst: Int?

    @Option(name: .customLong("jetstream"), help: "false: core NATS queue subscription, at-most-once. [env: NATS_JETSTREAM, default: true]")
    var jetStream: Bool?

    @Option(name: .customLong("stream"), help: "JetStream stream name. [env: NATS_STREAM, default: NOTIFICATIONS]")
    var streamName: String?

    @Option(name: .customLong("stream-storage"), help: "file or memory. [env: NATS_STREAM_STORAGE, default: file]")
    var streamStorage: String?

    @Option(name: .customLong("stream-max-age"), help: "Age after which the stream drops events; 0 keeps them. [env: NATS_STREAM_MAX_AGE, default: 7d]")
    var streamMaxAge: String?

    @Option(name: .customLong("stream-replicas"), help: "Copies of the streams in a NATS cluster, 1–5 (applies when the worker creates them). [env: NATS_STREAM_REPLICAS, default: 1]")
    var streamReplicas: Int?

    @Option(name: .customLong("consumer"), help: "Durable consumer shared by all workers. [env: NATS_CONSUMER, default: notification-worker]")
    var consumerName: String?

    @Option(name: .customLong("ack-wait"), help: "Redelivery after this long without an ack. [env: NATS_ACK_WAIT, default: 30s]")
    var ackWait: String?

    @Option(name: .customLong("max-deliver"), help: "Deliveries before an event is dead-lettered. [env: NATS_MAX_DELIVER, default: 5]")
    var maxDeliver: Int?

    @Option(name: .customLong("backoff"), help: "Redelivery delays, e.g. 1s,5s,30s. [env: NATS_BACKOFF]")
    var backoff: String?

    @Option(name: .customLong("batch-size"), help: "Most events per store transaction. [env: WORKER_BATCH_SIZE, default: 1024]")
    var batchSize: Int?
}

/// Flags of a worker's own operations port.
struct OperationsOptions: ParsableArguments {
    @Option(name: .customLong("metrics-port"), help: "Serve /health and /metrics on this port (0 picks one); off when unset. `serve` and `gateway` serve them on PORT. [env: METRICS_PORT]")
    var metricsPort: Int?
}
