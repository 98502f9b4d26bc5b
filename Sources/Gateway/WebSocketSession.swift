import NIOCore
import NIOWebSocket
import Notifications
import Synchronization

/// One WebSocket's live frames on their way from the hub (nats.c's callback
/// thread) to the connection's event loop.
///
/// `push` appends under a lock; the first frame of a burst schedules one
/// drain on the event loop, which writes everything queued and flushes once.
/// Bounded like `ClientQueue`: a client more than `limit` frames behind
/// (frames not yet handed to the channel) is closed with 1013.
final class WebSocketOutbox: LiveSink {
    /// What the session takes on the event loop.
    struct Batch {
        var frames: [[UInt8]]
        var overflowed: Bool
        var closed: CloseReason?
    }

    private struct State {
        var frames: [[UInt8]] = []
        /// A drain is scheduled or the session holds frames back (opening,
        /// or the channel above its high-water mark): pushes need not wake it.
        var drainScheduled = false
        var overflowed = false
        var closed: CloseReason?
    }

    let eventLoop: any EventLoop
    private let limit: Int
    private let state = Mutex(State())
    /// The session serving this outbox; `nil` once it left the pipeline.
    private let session: NIOLoopBoundBox<WebSocketSession?>

    /// Must be called on `eventLoop`.
    init(eventLoop: any EventLoop, limit: Int) {
        self.eventLoop = eventLoop
        self.limit = max(1, limit)
        self.session = NIOLoopBoundBox(nil, eventLoop: eventLoop)
    }

    @discardableResult
    func push(_ frame: [UInt8]) -> PushResult {
        let (result, wake) = state.withLock { state -> (PushResult, Bool) in
            guard state.closed == nil, !state.overflowed else { return (.refused, false) }
            if state.frames.count >= limit {
                state.overflowed = true
                state.frames = []
                return (.becameSlow, true)
            }
            state.frames.append(frame)
            if state.drainScheduled { return (.queued, false) }
            state.drainScheduled = true
            return (.queued, true)
        }
        if wake { scheduleDrain() }
        return result
    }

    func close(_ reason: CloseReason) {
        let wake = state.withLock { state -> Bool in
            guard state.closed == nil else { return false }
            state.closed = reason
            return true
        }
        if wake { scheduleDrain() }
    }

    private func scheduleDrain() {
        let session = self.session
        eventLoop.execute {
            session.value?.drain()
        }
    }

    /// On the event loop: the queued frames (unless `frames` is false and
    /// the outbox is not closed), whether the client fell behind, and
    /// whether the connection must close.
    func take(frames takeFrames: Bool) -> Batch {
        state.withLock { state in
            if state.overflowed { return Batch(frames: [], overflowed: true, closed: state.closed) }
            var frames: [[UInt8]] = []
            if takeFrames || state.closed != nil {
                swap(&frames, &state.frames)
                state.drainScheduled = false
            }
            return Batch(frames: frames, overflowed: false, closed: state.closed)
        }
    }

    /// On the event loop: the session now serving this outbox, or `nil`.
    func serve(_ session: WebSocketSession?) {
        self.session.value = session
    }

    /// Hands a room's join to the session. `false` when the session did
    /// not keep it (the connection is gone, the client left the room
    /// meanwhile, or the join failed): the caller leaves the room at the hub.
    func deliver(_ join: RoomJoin, room: Room) async -> Bool {
        let session = self.session
        let kept = try? await eventLoop.submit { () -> Bool in
            session.value?.joinFinished(room, join) ?? false
        }.get()
        return kept ?? false
    }

    /// Hands the opened feed, or why it could not open, to the session.
    /// `false` when the connection is already gone: the caller then
    /// detaches the feed itself.
    func deliver(_ opening: WebSocketOpening) async -> Bool {
        let session = self.session
        let delivered = try? await eventLoop.submit { () -> Bool in
            guard let current = session.value else { return false }
            current.opened(opening)
            return true
        }.get()
        return delivered ?? false
    }
}

/// How joining a room ended.
enum RoomJoin: Sendable {
    /// Subscribed; the replay after the join's `since` (empty without
    /// one), or `reset` when it was too long to send.
    case joined([NotificationRecord], reset: Bool)
    case failed(String)
}

/// How opening a WebSocket's feed ended.
enum WebSocketOpening: Sendable {
    /// Attached to the hub; `hello` and the replay are ready to send.
    case opened(LiveFeed<WebSocketOutbox>)
    /// Close the WebSocket with this code and reason.
    case refused(WebSocketErrorCode, reason: String)
}

/// One upgraded WebSocket, served on its event loop by this handler: no
/// Swift task waits on an idle connection.
///
/// It writes the opening frames (`hello`, the replay), then whatever the
/// outbox holds, leaving frames in the outbox while the channel is above its
/// high-water mark. It pings the client every `pingInterval` and closes it
/// (1001) when the previous ping went unanswered; answers pings; counts a
/// fragmented message against `maxInboundFrameBytes` (1009 above: a single
/// frame over the limit is refused by NIO's decoder, also 1009); and runs the
/// close handshake: a client's close frame is echoed and the connection
/// closed; after the server's own close frame the client has `closeTimeout`
/// to answer before the connection is closed anyway.
final class WebSocketSession: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// How long a client has to answer the server's close frame.
    static let closeTimeout = TimeAmount.seconds(5)

    private enum Phase {
        /// Upgraded; the feed is opening (store reads), nothing sent yet.
        case opening
        case live
        /// A close frame was sent; waiting for the client's.
        case closing
        case closed
    }

    private let outbox: WebSocketOutbox
    private let gateway: Gateway
    private let user: String
    private let expiresAt: Int64
    private var context: ChannelHandlerContext?
    private var phase = Phase.opening
    /// Set once the feed opened; detached from the hub when the channel goes.
    private var feed: LiveFeed<WebSocketOutbox>?
    /// The channel is above its high-water mark: frames wait in the outbox.
    private var paused = false
    /// Whether anything arrived since the last ping.
    private var heard = true
    private var pingTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?
    /// Bytes so far of the fragmented message being received, if any.
    private var messageBytes: Int?
    /// The text of the fragmented text message being received, if any.
    private var messageText: [UInt8]?
    /// Joins and leaves sent before the feed opened, taken once it has.
    private var early: [ClientFrame] = []

    private init(outbox: WebSocketOutbox, gateway: Gateway, user: String, expiresAt: Int64) {
        self.outbox = outbox
        self.gateway = gateway
        self.user = user
        self.expiresAt = expiresAt
    }

    /// Adds a session to an upgraded channel (on its event loop) and returns
    /// the outbox the feed delivers into.
    static func install(on channel: any Channel, gateway: Gateway, user: String, expiresAt: Int64) throws -> WebSocketOutbox {
        let outbox = WebSocketOutbox(eventLoop: channel.eventLoop, limit: gateway.configuration.clientQueueLimit)
        try channel.pipeline.syncOperations.addHandler(WebSocketSession(outbox: outbox, gateway: gateway, user: user, expiresAt: expiresAt))
        return outbox
    }

    // MARK: Life cycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outbox.serve(self)
        schedulePing()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        phase = .closed
        cancelTimers()
        outbox.serve(nil)
        self.context = nil
        if let feed {
            self.feed = nil
            gateway.webSocketEnded(feed, expiresAt: expiresAt)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        phase = .closed
        cancelTimers()
        context.fireChannelInactive()
    }

    /// The feed opened (or could not): send the opening frames and go live.
    func opened(_ opening: WebSocketOpening) {
        switch opening {
        case .refused(let code, let reason):
            startClose(code, reason: reason)
        case .opened(var feed):
            let frames = feed.takeOpening()
            self.feed = feed
            gateway.webSocketOpened(feed, expiresAt: expiresAt)
            guard phase == .opening, let context else { return }
            phase = .live
            write(frames, context: context)
            gateway.metrics.delivered(frames.count)
            if !context.channel.isWritable { paused = true }
            drain()
            let early = self.early
            self.early = []
            for frame in early { roomFrame(frame, context: context) }
        }
    }

    // MARK: Outbound

    /// Writes what the outbox holds (unless the channel is above its
    /// high-water mark), then acts on an overflow or a close.
    func drain() {
        guard phase == .live, let context else { return }
        let batch = outbox.take(frames: !paused)
        if batch.overflowed {
            let resume = feed?.lastSentID.map { " with since=\($0)" } ?? ""
            startClose(WebSocketErrorCode(codeNumber: 1013), reason: "client too slow; reconnect\(resume)")
            return
        }
        if !batch.frames.isEmpty {
            let live = feed?.live(batch.frames) ?? batch.frames
            write(live, context: context)
            gateway.metrics.delivered(live.count)
            if !context.channel.isWritable { paused = true }
        }
        switch batch.closed {
        case .shutdown?: startClose(.goingAway, reason: "server shutting down")
        case .tokenExpired?: startClose(.policyViolation, reason: "token expired")
        case .resume?:
            let resume = feed?.lastSentID.map { " with since=\($0)" } ?? ""
            startClose(WebSocketErrorCode(codeNumber: 1012), reason: "NATS reconnected; reconnect\(resume)")
        case .clientGone?: context.close(promise: nil)
        case nil: break
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if paused, context.channel.isWritable {
            paused = false
            drain()
        }
        context.fireChannelWritabilityChanged()
    }

    private func write(_ frames: [[UInt8]], context: ChannelHandlerContext) {
        guard !frames.isEmpty else { return }
        for frame in frames {
            let data = context.channel.allocator.buffer(bytes: frame)
            context.write(Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: data)), promise: nil)
        }
        context.flush()
    }

    /// Sends a close frame; the client has `closeTimeout` to answer it.
    private func startClose(_ code: WebSocketErrorCode, reason: String?) {
        guard phase == .opening || phase == .live, let context else { return }
        phase = .closing
        pingTimer?.cancel()
        pingTimer = nil
        var data = context.channel.allocator.buffer(capacity: 2 + (reason?.utf8.count ?? 0))
        data.write(webSocketErrorCode: code)
        if let reason { data.writeString(reason) }
        context.writeAndFlush(Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)), promise: nil)
        closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.closeTimeout) { [self] in
            closeTimer = nil
            self.context?.close(promise: nil)
        }
    }

    // MARK: Pings

    private func schedulePing() {
        guard let context else { return }
        pingTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(gateway.configuration.pingInterval)) { [self] in
            pingDue()
        }
    }

    private func pingDue() {
        pingTimer = nil
        guard phase == .opening || phase == .live, let context else { return }
        guard heard else {
            // Silent for two intervals.
            startClose(.goingAway, reason: "ping timeout")
            context.close(promise: nil)
            return
        }
        heard = false
        context.writeAndFlush(Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())), promise: nil)
        schedulePing()
    }

    private func cancelTimers() {
        pingTimer?.cancel()
        pingTimer = nil
        closeTimer?.cancel()
        closeTimer = nil
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        heard = true
        guard phase != .closed else { return }
        // Clients mask every frame (RFC 6455 §5.1); no extension is negotiated.
        guard frame.maskKey != nil, !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            startClose(.protocolError, reason: nil)
            return
        }
        switch frame.opcode {
        case .text, .binary:
            // Text messages are client frames (receipts); binary ones are
            // only counted.
            guard messageBytes == nil else { return startClose(.protocolError, reason: nil) }
            let text = frame.opcode == .text ? Array(frame.unmaskedData.readableBytesView) : nil
            if frame.fin {
                if let text { received(text, context: context) }
            } else {
                messageBytes = frame.length
                messageText = text
            }
        case .continuation:
            guard let sofar = messageBytes else { return startClose(.protocolError, reason: nil) }
            let total = sofar + frame.length
            guard total <= gateway.configuration.maxInboundFrameBytes else {
                (messageBytes, messageText) = (nil, nil)
                return startClose(.messageTooLarge, reason: nil)
            }
            messageText? += frame.unmaskedData.readableBytesView
            if frame.fin {
                let text = messageText
                (messageBytes, messageText) = (nil, nil)
                if let text { received(text, context: context) }
            } else {
                messageBytes = total
            }
        case .ping:
            guard frame.fin else { return startClose(.protocolError, reason: nil) }
            if phase == .opening || phase == .live {
                context.writeAndFlush(Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
            }
        case .pong:
            break
        case .connectionClose:
            receivedClose(frame, context: context)
        default:
            startClose(.protocolError, reason: nil)
        }
    }

    /// A client's text message: a receipt (`ack`, `seen`); anything else
    /// is answered with an `error` frame.
    private func received(_ text: [UInt8], context: ChannelHandlerContext) {
        guard phase == .opening || phase == .live else { return }
        switch ClientFrame.parse(text) {
        case .success(.receipt(let kind, let ids)):
            gateway.receipts.add(ids.map { Receipt(owner: user, id: $0, kind: kind) })
        case .success(let frame):
            guard feed != nil else {
                // Sent before `hello`: taken once the feed is open.
                if early.count < 2 * gateway.configuration.maxRoomsPerConnection { early.append(frame) }
                return
            }
            roomFrame(frame, context: context)
        case .failure(let error):
            sendError(error.message, context: context)
        }
    }

    /// An `error` frame; not before `hello`, which is always the first
    /// frame, and not to a client that does not read (its errors would
    /// pile up here).
    private func sendError(_ message: String, context: ChannelHandlerContext) {
        guard phase == .live, !paused, context.channel.isWritable else { return }
        var json = JSONWriterBridge()
        json.clientError(message)
        write([json.bytes], context: context)
    }

    /// `join` and `leave`: a broadcast room is joined through the hub
    /// (subscribe, then replay after `since`); `user:<id>` is the user's
    /// own feed, which this connection carries already, and nobody else's.
    private func roomFrame(_ frame: ClientFrame, context: ChannelHandlerContext) {
        guard phase == .live, var feed else { return }
        var reply = JSONWriterBridge()
        switch frame {
        case .receipt:
            return
        case .join(.user(let id), _), .leave(.user(let id)):
            guard id == user else { return sendError("user rooms are private: user:\(id) is not yours", context: context) }
            if case .join = frame { reply.joined("user:" + id) } else { reply.left("user:" + id) }
        case .join(.room(let room), let since):
            if feed.isIn(room) {
                reply.joined(room.name)
            } else if feed.rejoin(room) {
                // Left and joined again while the join was under way: its end answers.
                self.feed = feed
                return
            } else {
                guard feed.roomCount < gateway.configuration.maxRoomsPerConnection else {
                    return sendError("a connection joins at most \(gateway.configuration.maxRoomsPerConnection) rooms; leave one first", context: context)
                }
                feed.beginJoining(room)
                self.feed = feed
                let (gateway, outbox) = (self.gateway, self.outbox)
                Task { await gateway.joinRoom(room, since: since, outbox: outbox) }
                return
            }
        case .leave(.room(let room)):
            feed.leave(room, hub: gateway.hub)
            self.feed = feed
            reply.left(room.name)
        }
        write([reply.bytes], context: context)
    }

    /// A room's join ended (on the event loop): the replay and `joined`,
    /// or an error. `false` when the join is not kept.
    func joinFinished(_ room: Room, _ join: RoomJoin) -> Bool {
        guard phase == .live, let context, var feed else { return false }
        switch join {
        case .failed(let message):
            feed.cancelJoining(room)
            self.feed = feed
            sendError(message, context: context)
            return false
        case .joined(let replay, let reset):
            guard let frames = feed.finishJoining(room, replay: replay, subjects: gateway.configuration.subjects) else {
                self.feed = feed
                return false
            }
            self.feed = feed
            var joined = JSONWriterBridge()
            joined.joined(room.name, reset: reset)
            write(frames + [joined.bytes], context: context)
            gateway.metrics.delivered(frames.count)
            return true
        }
    }

    private func receivedClose(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        switch phase {
        case .opening, .live:
            phase = .closing
            cancelTimers()
            // Echo the status code (RFC 6455 §5.5.1), then close the connection.
            var received = frame.unmaskedData
            var reply = context.channel.allocator.buffer(capacity: 2)
            if let code = received.readWebSocketErrorCode() { reply.write(webSocketErrorCode: code) }
            context.writeAndFlush(Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reply)))
                .assumeIsolated()
                .whenComplete { _ in context.close(promise: nil) }
        case .closing:
            // The client answered our close frame: the handshake is complete.
            context.close(promise: nil)
        case .closed:
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            startClose(.goingAway, reason: "server shutting down")
        case let event as ChannelEvent where event == .inputClosed:
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // NIO's protocol error handler answers decoder errors (1009 for a
        // frame over the limit) and closes once its close frame is written.
        if error is NIOWebSocketError { return }
        context.close(promise: nil)
    }
}
