import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A request an ``HTTPReceiver`` took.
struct ReceivedRequest: Sendable {
    let method: String
    let path: String
    let headers: [(String, String)]
    let body: [UInt8]
    let at: ContinuousClock.Instant

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

/// A real HTTP/1.1 server on a loopback port that records every request
/// and answers what `respond` says (a status and extra headers).
final class HTTPReceiver: Sendable {
    typealias Responder = @Sendable (ReceivedRequest, Int) -> (status: Int, headers: [(String, String)])

    /// The requests taken, shared with the connections' handlers.
    private final class RequestLog: Sendable {
        let requests = Mutex<[ReceivedRequest]>([])
    }

    private let channel: any Channel
    private let log = RequestLog()
    let port: Int

    init(respond: @escaping Responder) async throws {
        let log = self.log
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(RecordingHandler(log: log, respond: respond))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress?.port ?? 0
    }

    var url: String { "http://127.0.0.1:\(port)/hook" }
    var requests: [ReceivedRequest] { log.requests.withLock { $0 } }

    func stop() async {
        try? await channel.close()
    }

    private final class RecordingHandler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let log: RequestLog
        let respond: Responder
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(log: RequestLog, respond: @escaping Responder) {
            self.log = log
            self.respond = respond
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = []
            case .body(var buffer):
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                guard let head else { return }
                let request = ReceivedRequest(
                    method: head.method.rawValue, path: head.uri, headers: head.headers.map { ($0.name, $0.value) }, body: body, at: .now)
                let index = log.requests.withLock { log in
                    log.append(request)
                    return log.count
                }
                let (status, extra) = respond(request, index)
                var headers = HTTPHeaders(extra)
                headers.add(name: "Content-Length", value: "0")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
