import CNATS
import Dispatch
import Synchronization

/// How to reach NATS.
public struct NATSConnectionOptions: Sendable {
    /// Server URLs (`nats://host:port`); nats.c tries them in turn.
    public var urls: [String]
    /// Shown in the server's connection list.
    public var name: String
    /// A `.creds` file (user JWT and NKey seed), e.g. for NGS.
    public var credentialsFile: String?
    /// How long one connection attempt may take.
    public var connectTimeout: Duration
    /// Delay before the first reconnect round; doubles per round up to
    /// ``maxReconnectDelay``, plus up to 20% jitter.
    public var minReconnectDelay: Duration
    public var maxReconnectDelay: Duration
    /// Bytes of publishes buffered while reconnecting.
    public var reconnectBufferBytes: Int
    /// Writes each publish to the socket at once. By default nats.c holds
    /// publishes for about a millisecond to send them together, which
    /// favours throughput; see ``NATSConnection/sendBuffered()`` for a
    /// flush per batch instead.
    public var sendImmediately: Bool
    /// Whether subscriptions with a handler share nats.c's message delivery
    /// thread pool (one thread unless `nats_SetMessageDeliveryPoolSize`
    /// says otherwise) instead of a thread each, nats.c's default. Every
    /// handler here copies the message and returns, so one thread keeps up;
    /// a gateway holds a subscription per connected user, and a thread each
    /// would cost a stack and a context switch per message.
    public var sharedMessageDelivery: Bool

    public init(
        urls: [String] = ["nats://127.0.0.1:4222"],
        name: String = "notify",
        credentialsFile: String? = nil,
        connectTimeout: Duration = .seconds(2),
        minReconnectDelay: Duration = .milliseconds(100),
        maxReconnectDelay: Duration = .seconds(5),
        reconnectBufferBytes: Int = 8 * 1024 * 1024,
        sendImmediately: Bool = false,
        sharedMessageDelivery: Bool = true
    ) {
        self.urls = urls
        self.name = name
        self.credentialsFile = credentialsFile
        self.connectTimeout = connectTimeout
        self.minReconnectDelay = minReconnectDelay
        self.maxReconnectDelay = maxReconnectDelay
        self.reconnectBufferBytes = reconnectBufferBytes
        self.sendImmediately = sendImmediately
        self.sharedMessageDelivery = sharedMessageDelivery
    }
}

/// What ``NATSConnection/publishConfirmable(_:)`` published: a place in the
/// connection's stream of publishes, on one connection to a server.
public struct PublishReceipt: Sendable, Hashable {
    /// Completed reconnects when the publishes began.
    let generation: UInt64
    /// Publishes on the connection when they ended.
    let position: UInt64
}

/// Whether a ``PublishReceipt``'s messages reached the server.
public enum PublishConfirmation: Sendable, Hashable {
    /// A flush after them came back on the same connection.
    case confirmed
    /// Not yet known: no flush after them has come back.
    case pending
    /// The connection was re-made before a flush confirmed them: they
    /// may have been lost with the old connection. Publish them again.
    case unknown
}

/// The state of a connection, as nats.c reports it.
public enum NATSConnectionStatus: Sendable, Hashable, CustomStringConvertible {
    case disconnected, connecting, connected, closed, reconnecting, draining

    public var description: String {
        switch self {
        case .disconnected: "disconnected"
        case .connecting: "connecting"
        case .connected: "connected"
        case .closed: "closed"
        case .reconnecting: "reconnecting"
        case .draining: "draining"
        }
    }
}

/// Something that happened to a connection, for logs and metrics.
public enum NATSConnectionEvent: Sendable, Hashable {
    case disconnected
    case reconnected(url: String)
    case closed
    /// An asynchronous error, e.g. a slow consumer.
    case error(String)
}

/// State shared with nats.c's connection callbacks. Retained for nats.c
/// while the connection exists; released by the closed callback.
final class ConnectionCallbacks: Sendable {
    let events: AsyncStream<NATSConnectionEvent>
    let continuation: AsyncStream<NATSConnectionEvent>.Continuation
    let reconnects = Atomic<Int>(0)
    /// Called on nats.c's thread after each reconnect, with the new URL.
    let reconnectHandlers = Mutex<[@Sendable (String) -> Void]>([])
    /// Set by ``NATSConnection/close()``: the disconnect that follows is ours.
    let closing = Atomic<Bool>(false)
    let minDelayMilliseconds: Int64
    let maxDelayMilliseconds: Int64

    init(minDelay: Duration, maxDelay: Duration) {
        (events, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(256))
        minDelayMilliseconds = max(1, milliseconds(minDelay))
        maxDelayMilliseconds = max(minDelayMilliseconds, milliseconds(maxDelay))
    }
}

private func connectionCallbacks(_ closure: UnsafeMutableRawPointer?) -> ConnectionCallbacks? {
    closure.map { Unmanaged<ConnectionCallbacks>.fromOpaque($0).takeUnretainedValue() }
}

/// A connection to NATS through nats.c: reconnects forever with backoff,
/// publishes, subscribes, and opens JetStream contexts.
///
/// Thread-safe (nats.c locks internally). The nats.c connection is
/// destroyed when the last reference goes; subscriptions and JetStream
/// contexts keep their connection alive.
public final class NATSConnection: @unchecked Sendable {
    let handle: OpaquePointer
    private let callbacks: ConnectionCallbacks
    public let options: NATSConnectionOptions
    private let sendRequested = Atomic<Bool>(false)
    /// Publishes so far; a ``PublishReceipt`` holds a position in it.
    private let publishes = Atomic<UInt64>(0)
    /// The furthest position a flush has confirmed, per generation (the
    /// newest 64 kept).
    private let confirmed = Mutex<[UInt64: UInt64]>([:])

    private init(handle: OpaquePointer, callbacks: ConnectionCallbacks, options: NATSConnectionOptions) {
        self.handle = handle
        self.callbacks = callbacks
        self.options = options
    }

    deinit {
        // Closes first when still open; the closed callback releases `callbacks`.
        natsConnection_Destroy(handle)
    }

    /// Connects to the first reachable server of `options.urls`; throws when
    /// none answers. Once connected, it reconnects forever.
    public static func connect(_ options: NATSConnectionOptions) async throws(NATSError) -> NATSConnection {
        guard !options.urls.isEmpty else {
            throw NATSError(code: .invalidArgument, operation: "connect", message: "no server URL given")
        }
        return try await onQueue(blockingQueue) { () throws(NATSError) -> NATSConnection in
            try connectBlocking(options)
        }
    }

    private static func connectBlocking(_ options: NATSConnectionOptions) throws(NATSError) -> NATSConnection {
        let context = "servers \(options.urls.joined(separator: ","))"
        var opts: OpaquePointer?
        try check(natsOptions_Create(&opts), "connect", context: context)
        guard let opts else { throw NATSError(code: .other, operation: "connect", message: "cannot create options") }
        defer { natsOptions_Destroy(opts) }

        let arena = CStringArena()
        let callbacks = ConnectionCallbacks(minDelay: options.minReconnectDelay, maxDelay: options.maxReconnectDelay)
        let closure = Unmanaged.passRetained(callbacks).toOpaque()
        var connection: OpaquePointer?
        var status = natsOptions_SetServers(opts, arena.array(options.urls), Int32(options.urls.count))
        if status == NATS_OK { status = natsOptions_SetName(opts, options.name) }
        if status == NATS_OK { status = natsOptions_SetTimeout(opts, max(1, milliseconds(options.connectTimeout))) }
        if status == NATS_OK { status = natsOptions_SetMaxReconnect(opts, -1) }
        if status == NATS_OK { status = natsOptions_SetReconnectBufSize(opts, Int32(clamping: options.reconnectBufferBytes)) }
        if status == NATS_OK { status = natsOptions_SetSendAsap(opts, options.sendImmediately) }
        if status == NATS_OK { status = natsOptions_UseGlobalMessageDelivery(opts, options.sharedMessageDelivery) }
        if status == NATS_OK, let file = options.credentialsFile {
            status = natsOptions_SetUserCredentialsFromFiles(opts, file, nil)
        }
        if status == NATS_OK {
            status = natsOptions_SetCustomReconnectDelay(opts, { _, attempts, closure in
                guard let callbacks = connectionCallbacks(closure) else { return 1000 }
                let exponent = min(max(Int64(attempts) - 1, 0), 20)
                let base = min(callbacks.minDelayMilliseconds << exponent, callbacks.maxDelayMilliseconds)
                return base + Int64.random(in: 0...max(1, base / 5))
            }, closure)
        }
        if status == NATS_OK {
            status = natsOptions_SetDisconnectedCB(opts, { _, closure in
                guard let callbacks = connectionCallbacks(closure), !callbacks.closing.load(ordering: .relaxed) else { return }
                callbacks.continuation.yield(.disconnected)
            }, closure)
        }
        if status == NATS_OK {
            status = natsOptions_SetReconnectedCB(opts, { connection, closure in
                guard let callbacks = connectionCallbacks(closure) else { return }
                callbacks.reconnects.add(1, ordering: .relaxed)
                var buffer = [CChar](repeating: 0, count: 256)
                natsConnection_GetConnectedUrl(connection, &buffer, buffer.count)
                let url = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                callbacks.continuation.yield(.reconnected(url: url))
                for handler in callbacks.reconnectHandlers.withLock({ $0 }) { handler(url) }
            }, closure)
        }
        if status == NATS_OK {
            status = natsOptions_SetErrorHandler(opts, { _, _, error, closure in
                connectionCallbacks(closure)?.continuation.yield(.error(String(cString: natsStatus_GetText(error))))
            }, closure)
        }
        if status == NATS_OK {
            status = natsOptions_SetClosedCB(opts, { _, closure in
                guard let closure else { return }
                let callbacks = Unmanaged<ConnectionCallbacks>.fromOpaque(closure).takeRetainedValue()
                callbacks.continuation.yield(.closed)
                callbacks.continuation.finish()
            }, closure)
        }
        if status == NATS_OK {
            status = natsConnection_Connect(&connection, opts)
        }
        guard status == NATS_OK, let connection else {
            // No connection exists, so no callback will release the box.
            Unmanaged<ConnectionCallbacks>.fromOpaque(closure).release()
            let error = NATSError(operation: "connect", status: status, context: context)
            throw error.code == .other || error.code == .timeout
                ? NATSError(code: .connectionFailed, operation: "connect", message: error.statusText, context: context)
                : error
        }
        return NATSConnection(handle: connection, callbacks: callbacks, options: options)
    }

    /// The connection's current state.
    public var status: NATSConnectionStatus {
        switch natsConnection_Status(handle) {
        case NATS_CONN_STATUS_CONNECTED: .connected
        case NATS_CONN_STATUS_CONNECTING: .connecting
        case NATS_CONN_STATUS_RECONNECTING: .reconnecting
        case NATS_CONN_STATUS_CLOSED: .closed
        case NATS_CONN_STATUS_DRAINING_PUBS, NATS_CONN_STATUS_DRAINING_SUBS: .draining
        default: .disconnected
        }
    }

    /// How many times the connection has been re-established.
    public var reconnectCount: Int { callbacks.reconnects.load(ordering: .relaxed) }

    /// Calls `handler` after every reconnect (with the server's URL), on
    /// nats.c's thread, once the subscriptions are re-established there:
    /// messages published while the connection was down were not received.
    /// It must not block.
    public func onReconnect(_ handler: @escaping @Sendable (String) -> Void) {
        callbacks.reconnectHandlers.withLock { $0.append(handler) }
    }

    /// Connection events as they happen (newest 256 kept when nobody reads).
    public var events: AsyncStream<NATSConnectionEvent> { callbacks.events }

    /// The URL of the server currently connected, if any.
    public var connectedURL: String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard natsConnection_GetConnectedUrl(handle, &buffer, buffer.count) == NATS_OK, buffer[0] != 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The largest message (headers and payload) the server accepts, in
    /// bytes, as it announced when the connection was made (1 MiB unless
    /// configured otherwise).
    public var maxPayload: Int {
        Int(natsConnection_GetMaxPayload(handle))
    }

    /// Publishes without waiting (buffered while reconnecting).
    public func publish(_ subject: String, payload: [UInt8], headers: NATSHeaders = [:]) throws(NATSError) {
        if headers.isEmpty {
            let status = payload.withUnsafeBytes { bytes in
                natsConnection_Publish(handle, subject, bytes.baseAddress, Int32(bytes.count))
            }
            try check(status, "publish", context: "subject \(subject)")
        } else {
            let message = try makeMessage(subject: subject, reply: nil, headers: headers, payload: payload)
            defer { natsMsg_Destroy(message) }
            try check(natsConnection_PublishMsg(handle, message), "publish", context: "subject \(subject)")
        }
        publishes.add(1, ordering: .releasing)
    }

    /// Runs `body`, which publishes on this connection, and returns a
    /// receipt for what it published: ``confirmation(of:)`` later says
    /// whether the server is known to have received all of it.
    ///
    /// A publish that returned has only reached nats.c's buffer: when the
    /// server goes away, what was on the wire is lost, and a later flush
    /// on the new connection says nothing about it. Whatever must not be
    /// lost (an outbox) is kept until its receipt is confirmed.
    public func publishConfirmable(_ body: (NATSConnection) throws(NATSError) -> Void) throws(NATSError) -> PublishReceipt {
        let generation = generation()
        try body(self)
        return PublishReceipt(generation: generation, position: publishes.load(ordering: .acquiring))
    }

    /// Whether the server has received what `receipt` covers, as far as
    /// the flushes so far tell (``sendBuffered()`` and ``flush(timeout:)``
    /// both count).
    public func confirmation(of receipt: PublishReceipt) -> PublishConfirmation {
        let position = confirmed.withLock { $0[receipt.generation] }
        if let position, position >= receipt.position { return .confirmed }
        // The connection was re-made since: what was on the old wire may be gone.
        return generation() > receipt.generation ? .unknown : .pending
    }

    /// nats.c's count of completed reconnects. It is raised before the
    /// new connection sends anything, so a flush whose PING waited out a
    /// reconnect ends with a higher count than it started with.
    private func generation() -> UInt64 {
        var stats: OpaquePointer?
        guard natsStatistics_Create(&stats) == NATS_OK, let stats else { return 0 }
        defer { natsStatistics_Destroy(stats) }
        var reconnects: UInt64 = 0
        guard natsConnection_GetStats(handle, stats) == NATS_OK,
              natsStatistics_GetCounts(stats, nil, nil, nil, nil, &reconnects) == NATS_OK else { return 0 }
        return reconnects
    }

    /// Flushes and, when the PONG came back on the same connection as the
    /// publishes before it, records them as confirmed.
    private func flushConfirming(milliseconds timeout: Int64) -> natsStatus {
        let generation = generation()
        let position = publishes.load(ordering: .acquiring)
        let status = natsConnection_FlushTimeout(handle, timeout)
        guard status == NATS_OK, self.generation() == generation else { return status }
        confirmed.withLock { positions in
            positions[generation] = max(positions[generation] ?? 0, position)
            if positions.count > 64, let oldest = positions.keys.min() { positions[oldest] = nil }
        }
        return status
    }

    /// Sends what is buffered now instead of after nats.c's accumulation
    /// window (about a millisecond), without waiting: call it after
    /// publishing a batch. At most one such send is outstanding; a failure
    /// shows on later publishes.
    public func sendBuffered() {
        guard sendRequested.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        blockingQueue.async { [self] in
            sendRequested.store(false, ordering: .releasing)
            // The PING written by a flush sends the buffer in place; its
            // PONG is waited for only briefly, on this queue.
            _ = flushConfirming(milliseconds: 100)
        }
    }

    /// Waits until the server has processed everything published so far.
    public func flush(timeout: Duration = .seconds(5)) async throws(NATSError) {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) in
            try check(flushConfirming(milliseconds: max(1, milliseconds(timeout))), "flush")
        }
    }

    /// Subscribes to `subject` (wildcards allowed), optionally in a queue
    /// group. Messages beyond `bufferLimit` unread ones are dropped and
    /// counted in ``NATSSubscription/droppedMessages``.
    public func subscribe(_ subject: String, queue: String? = nil, bufferLimit: Int = 65_536) throws(NATSError) -> NATSSubscription {
        try NATSSubscription(connection: self, subject: subject, queue: queue, bufferLimit: bufferLimit)
    }

    /// Flushes pending publishes and closes. Later calls fail with
    /// ``NATSError/Code/connectionClosed``.
    public func close() async {
        try? await flush(timeout: .seconds(2))
        callbacks.closing.store(true, ordering: .relaxed)
        natsConnection_Close(handle)
    }
}

/// Library-wide nats.c resources.
public enum NATSLibrary {
    /// Releases nats.c's threads and memory once every connection is gone.
    /// Call once at process exit; `false` when it timed out.
    @discardableResult
    public static func shutdown(timeout: Duration = .seconds(2)) -> Bool {
        nats_CloseAndWait(max(1, milliseconds(timeout))) == NATS_OK
    }
}

func milliseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    return seconds * 1000 + attoseconds / 1_000_000_000_000_000
}
