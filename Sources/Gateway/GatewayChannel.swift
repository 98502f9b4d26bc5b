import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

/// What a WebSocket upgrade was granted with: the verified token and the
/// `since` to resume from.
struct WebSocketGrant: Sendable {
    let token: VerifiedToken
    let since: String?
}

/// The gateway's connections: HTTP/1.1 through Hummingbird's router, and
/// `/ws` upgraded to a WebSocket served by a `WebSocketSession` on the
/// event loop.
///
/// The upgrade is decided from the request head alone (path, origin,
/// token) by `WebSocketUpgradeGate`. A refused upgrade is not answered
/// here: the request goes on to the router like any other, whose `/ws`
/// route answers it 401 or 403 with a JSON body. A granted one gets its
/// 101, then the connection's task opens the feed (hub, store), hands it to
/// the session and ends: an established WebSocket is a NIO channel and a
/// handler, with no Swift task.
struct GatewayChannel: ServerChildChannel, HTTPChannelHandler {
    enum Negotiated: Sendable {
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case webSocket(WebSocketOutbox, WebSocketGrant)
    }

    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let gateway: Gateway

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let gateway = self.gateway
        let configuration = gateway.configuration
        return channel.eventLoop.makeCompletedFuture {
            // Carries the grant from the upgrade decision to the pipeline change.
            let granted = NIOLoopBoundBox<WebSocketGrant?>(nil, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<Negotiated>(
                maxFrameSize: configuration.maxInboundFrameBytes,
                shouldUpgrade: { channel, _ in
                    // The gate let the upgrade through only with a grant.
                    channel.eventLoop.makeSucceededFuture(granted.value == nil ? nil : HTTPHeaders())
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let grant = granted.value else { throw ChannelError.inappropriateOperationForState }
                        granted.value = nil
                        let outbox = try WebSocketSession.install(
                            on: channel, gateway: gateway, user: grant.token.user, expiresAt: grant.token.expiresAt)
                        return .webSocket(outbox, grant)
                    }
                })
            let upgrade = NIOTypedHTTPServerUpgradeConfiguration<Negotiated>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: configuration.handshakeTimeout, logger: logger))
                        return .http(try NIOAsyncChannel(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true)))
                    }
                })
            var pipeline = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrade)
            pipeline.enablePipelining = false  // NIOAsyncChannel serialises requests
            pipeline.enableErrorHandling = false  // Hummingbird answers parse errors
            pipeline.enableResponseHeaderValidation = false  // HTTPTypes validated them
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipeline)
            let upgradeHandler = try channel.pipeline.syncOperations.handler(type: NIOTypedHTTPServerUpgradeHandler<Negotiated>.self)
            try channel.pipeline.syncOperations.addHandler(
                WebSocketUpgradeGate(gateway: gateway, granted: granted), position: .before(upgradeHandler))
            // A client that never sends its first request is closed.
            let timeout = channel.eventLoop.scheduleTask(in: TimeAmount(configuration.handshakeTimeout)) {
                channel.close(promise: nil)
            }
            negotiated.whenComplete { _ in timeout.cancel() }
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .http(let channel):
                await handleHTTP(asyncChannel: channel, logger: logger)
            case .webSocket(let outbox, let grant):
                await gateway.openWebSocket(outbox, grant: grant)
            }
        } catch {
            logger.trace("connection ended before its first request", metadata: ["error.type": .string("\(type(of: error))")])
        }
    }
}

/// Decides a WebSocket upgrade from the first request head, in front of
/// NIO's upgrade handler. NIO drops a request whose upgrade no upgrader
/// accepts, leaving the client unanswered; so the gate strips `Upgrade`
/// from every request it does not grant, which then reaches the router as
/// a plain request (the `/ws` route answers 401, 403 or 426 with a JSON
/// body). A granted upgrade leaves its grant for the upgrader. Only the
/// first request of a connection can upgrade: the gate then leaves.
final class WebSocketUpgradeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    private let gateway: Gateway
    private let granted: NIOLoopBoundBox<WebSocketGrant?>

    init(gateway: Gateway, granted: NIOLoopBoundBox<WebSocketGrant?>) {
        self.gateway = gateway
        self.granted = granted
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = Self.unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        if head.headers.contains(name: "upgrade") {
            if Self.isWebSocketHandshake(head), let grant = gateway.webSocketGrant(head) {
                granted.value = grant
            } else {
                head.headers.remove(name: "upgrade")
                head.headers.remove(name: "connection")
            }
        }
        context.fireChannelRead(Self.wrapInboundOut(.head(head)))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Shutting down before the first request: nothing to finish.
        if event is ChannelShouldQuiesceEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The headers NIO's upgrader needs (RFC 6455 §4.2.1).
    private static func isWebSocketHandshake(_ head: HTTPRequestHead) -> Bool {
        head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
            && head.headers["sec-websocket-key"].count == 1
            && head.headers["sec-websocket-version"] == ["13"]
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with the gateway's WebSocket upgrade on `/ws`.
    static func gateway(_ gateway: Gateway) -> HTTPServerBuilder {
        .init { responder in GatewayChannel(responder: responder, gateway: gateway) }
    }
}
