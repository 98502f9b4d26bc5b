import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1

/// Decides, from the request head alone, whether a WebSocket upgrade must
/// be refused. hummingbird-websocket answers every refused upgrade with a
/// bare 400; the gate instead strips `Upgrade` from a refused request, so
/// the ordinary HTTP router answers it (401 or 403 with a JSON body).
final class WebSocketUpgradeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    private let shouldRefuse: @Sendable (HTTPRequestHead) -> Bool

    init(shouldRefuse: @escaping @Sendable (HTTPRequestHead) -> Bool) {
        self.shouldRefuse = shouldRefuse
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        let wantsUpgrade = head.headers["upgrade"].contains { $0.lowercased() == "websocket" }
        if wantsUpgrade, shouldRefuse(head) {
            head.headers.remove(name: "upgrade")
            head.headers.remove(name: "connection")
            context.fireChannelRead(wrapInboundOut(.head(head)))
        } else {
            context.fireChannelRead(data)
        }
        // Only the first request can upgrade; after an upgrade this handler
        // must not see WebSocket bytes.
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// `HTTP1WebSocketUpgradeChannel` with the gate in front of NIO's upgrader.
struct GatedWebSocketUpgradeChannel: ServerChildChannel {
    typealias Value = HTTP1WebSocketUpgradeChannel.Value
    let base: HTTP1WebSocketUpgradeChannel
    let shouldRefuse: @Sendable (HTTPRequestHead) -> Bool

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let shouldRefuse = self.shouldRefuse
        return base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let upgrader = try channel.pipeline.syncOperations.handler(
                type: NIOTypedHTTPServerUpgradeHandler<HTTP1WebSocketUpgradeChannel.UpgradeResult>.self)
            try channel.pipeline.syncOperations.addHandler(WebSocketUpgradeGate(shouldRefuse: shouldRefuse), position: .before(upgrader))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with WebSocket upgrades, refused ones answered by the HTTP router.
    static func gatedWebSocketUpgrade<WebSocketResponder: HTTPResponder>(
        webSocketResponder: WebSocketResponder,
        configuration: HTTP1WebSocketUpgradeChannel.Configuration,
        shouldRefuse: @escaping @Sendable (HTTPRequestHead) -> Bool
    ) -> HTTPServerBuilder where WebSocketResponder.Context: WebSocketRequestContext {
        .init { responder in
            GatedWebSocketUpgradeChannel(
                base: HTTP1WebSocketUpgradeChannel(responder: responder, webSocketResponder: webSocketResponder, configuration: configuration),
                shouldRefuse: shouldRefuse)
        }
    }
}
