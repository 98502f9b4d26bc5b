import Hummingbird
import JSON
import NATS
import NIOCore
import Notifications

/// Development only (never with `ENVIRONMENT=production`): the demo page, a
/// token endpoint for it, and a way to publish a test event.
enum DevelopmentRoutes {
    static func add(to router: Router<GatewayContext>, gateway: Gateway) {
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: DemoPage.html)))
        }
        router.get("/dev/sw.js") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/javascript; charset=utf-8", .init("Service-Worker-Allowed")!: "/", .cacheControl: "no-cache"],
                body: .init(byteBuffer: ByteBuffer(string: DemoPage.serviceWorker)))
        }
        router.post("/dev/token") { request, _ -> Response in
            let user = try await userField(request)
            let expires = unixNow() + 3_600
            var json = JSONWriterBridge()
            json.raw("{\"token\":")
            json.string(gateway.verifier.sign(user: user, expiresAt: expires))
            json.raw(",\"user\":")
            json.string(user)
            json.raw(",\"expires_at\":")
            json.integer(expires)
            json.raw("}")
            return jsonResponse(json.bytes)
        }
        router.post("/dev/events") { request, _ -> Response in
            let owner = try await userField(request)
            guard let jetStream = gateway.devPublisher else { throw APIError(.notFound, code: "not_found", message: "not available") }
            let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
            var event = JSONWriterBridge()
            event.raw("{\"owner\":")
            event.string(owner)
            event.raw(",\"trigger_user\":\"demo-bot\",\"username\":\"Demo Bot\",\"action\":1,\"resource_type\":\"POST\",\"resource_id\":")
            event.string("post-" + suffix)
            event.raw(",\"excerpt\":\"A test notification from the demo page\",\"created_at\":")
            event.integer(unixNow())
            event.raw("}")
            do {
                let ack = try await jetStream.publish("notifications.post.like", payload: event.bytes)
                var json = JSONWriterBridge()
                json.count("seq", Int64(ack.sequence))
                return jsonResponse(json.bytes)
            } catch {
                throw APIError(.serviceUnavailable, code: "publish_failed", message: "\(error)")
            }
        }
    }

    private static func userField(_ request: Request) async throws -> String {
        let body = try await request.body.collect(upTo: 4_096)
        guard case .object(let object)? = try? JSONParser.parse(Array(body.readableBytesView)),
              case .string(let user)? = object["user"], EventValidator.isValidUserID(user)
        else { throw APIError.badRequest(#"send {"user":"<id>"} with 1–128 characters of A–Z, a–z, 0–9, '_' or '-'"#) }
        return user
    }
}
