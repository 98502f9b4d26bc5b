public import Notifications

/// Everything the gateway needs to know, validated before it starts.
public struct GatewayConfiguration: Sendable {
    /// Listen address (`HOST`, `PORT`); port 0 picks a free one.
    public var host: String
    public var port: Int
    /// HS256 secret shared with the main API (`JWT_SECRET`).
    public var jwtSecret: String
    public var jwtIssuer: String?
    public var jwtAudience: String?
    /// Origins allowed for CORS and WebSocket upgrades; `nil` allows any
    /// (development only).
    public var allowedOrigins: [String]?
    /// Prefix of the per-user subjects (`USER_SUBJECT_PREFIX`).
    public var userSubjectPrefix: String
    /// Prefix of the room subjects (`ROOM_SUBJECT_PREFIX`).
    public var roomSubjectPrefix: String
    /// The most rooms one connection may join.
    public var maxRoomsPerConnection: Int
    /// The subjects the worker publishes on.
    public var subjects: OutboundSubjects { OutboundSubjects(users: userSubjectPrefix, rooms: roomSubjectPrefix) }
    /// Open WebSocket and SSE connections one user may hold.
    public var maxConnectionsPerUser: Int
    /// Frames a connection may have queued before it is closed as slow
    /// (1013). Must exceed the worker's batch size: a batch may carry that
    /// many notifications for one user, published in one burst.
    public var clientQueueLimit: Int
    /// Largest inbound WebSocket frame (1009 above).
    public var maxInboundFrameBytes: Int
    /// Ping interval; a client silent for two intervals is closed.
    public var pingInterval: Duration
    /// How long a client may take to complete the HTTP/WebSocket handshake.
    public var handshakeTimeout: Duration
    /// `true` in production: no demo page, no development token endpoint,
    /// `allowedOrigins` required.
    public var production: Bool
    /// Notifications replayed on resume, at most; more asks the client to reload.
    public var maxReplay: Int
    /// Version reported by `/health`.
    public var version: String
    /// The worker's JetStream consumer, whose backlog `/health` and
    /// `/metrics` report; `nil` when events come over core NATS.
    public var consumer: ConsumerName?
    /// What signs the email unsubscribe links (`UNSUBSCRIBE_SECRET`);
    /// `nil`: `jwtSecret`. The dispatcher must use the same.
    public var unsubscribeSecret: String? = nil
    /// The VAPID public key browsers subscribe with
    /// (`GET /v1/channels/webpush/key`); `nil` when Web Push is off.
    public var vapidPublicKey: String? = nil

    public init(
        host: String = "0.0.0.0",
        port: Int = 8080,
        jwtSecret: String,
        jwtIssuer: String? = nil,
        jwtAudience: String? = nil,
        allowedOrigins: [String]? = nil,
        userSubjectPrefix: String = "users",
        roomSubjectPrefix: String = "rooms",
        maxRoomsPerConnection: Int = 32,
        maxConnectionsPerUser: Int = 20,
        clientQueueLimit: Int = 4_096,
        maxInboundFrameBytes: Int = 65_536,
        pingInterval: Duration = .seconds(30),
        handshakeTimeout: Duration = .seconds(10),
        production: Bool = false,
        maxReplay: Int = 1_000,
        version: String = "dev",
        consumer: ConsumerName? = nil
    ) {
        self.host = host
        self.port = port
        self.jwtSecret = jwtSecret
        self.jwtIssuer = jwtIssuer
        self.jwtAudience = jwtAudience
        self.allowedOrigins = allowedOrigins
        self.userSubjectPrefix = userSubjectPrefix
        self.roomSubjectPrefix = roomSubjectPrefix
        self.maxRoomsPerConnection = maxRoomsPerConnection
        self.maxConnectionsPerUser = maxConnectionsPerUser
        self.clientQueueLimit = clientQueueLimit
        self.maxInboundFrameBytes = maxInboundFrameBytes
        self.pingInterval = pingInterval
        self.handshakeTimeout = handshakeTimeout
        self.production = production
        self.maxReplay = maxReplay
        self.version = version
        self.consumer = consumer
    }

    /// Whether a browser page from `origin` may call the API or open a WebSocket.
    public func allows(origin: String) -> Bool {
        guard let allowedOrigins else { return true }
        return allowedOrigins.contains(origin)
    }
}

/// A durable JetStream consumer: its stream and name.
public struct ConsumerName: Sendable, Hashable {
    public var stream: String
    public var name: String

    public init(stream: String, name: String) {
        self.stream = stream
        self.name = name
    }
}
