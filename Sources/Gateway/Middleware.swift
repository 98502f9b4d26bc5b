import Hummingbird
import HummingbirdCore
import Logging

/// The bearer token of a request: `Authorization: Bearer <jwt>`, or the
/// `access_token` query parameter (browsers cannot set headers on WebSocket
/// and EventSource requests).
func bearerToken(authorization: String?, query: String?) -> String? {
    if let authorization, authorization.utf8.count > 7, authorization.prefix(7).lowercased() == "bearer " {
        return trimmingSpaces(authorization.utf8.dropFirst(7))
    }
    guard let query else { return nil }
    for pair in query.utf8.split(separator: UInt8(ascii: "&")) {
        let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
        if parts.count == 2, parts[0].elementsEqual("access_token".utf8) {
            return percentDecoded(parts[1]) ?? String(decoding: parts[1], as: UTF8.self)
        }
    }
    return nil
}

/// The bytes without leading and trailing spaces and tabs, as a string.
/// (Foundation's `trimmingCharacters(in:)` goes through NSString and took
/// a millisecond for a 16 KiB header.)
private func trimmingSpaces(_ bytes: Substring.UTF8View) -> String {
    let isSpace = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
    guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) }) else { return "" }
    return String(decoding: bytes[first...last], as: UTF8.self)
}

/// `%XX` sequences decoded; `nil` when one is malformed or the result is
/// not UTF-8 (the caller then uses the text as it is).
private func percentDecoded(_ bytes: some Collection<UInt8>) -> String? {
    guard bytes.contains(UInt8(ascii: "%")) else { return String(decoding: bytes, as: UTF8.self) }
    func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
    var decoded: [UInt8] = []
    decoded.reserveCapacity(bytes.count)
    var iterator = bytes.makeIterator()
    while let byte = iterator.next() {
        guard byte == UInt8(ascii: "%") else {
            decoded.append(byte)
            continue
        }
        guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
        decoded.append(high << 4 | low)
    }
    return String(validating: decoded, as: UTF8.self)
}

/// Verifies the bearer token; on success the context carries it.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let verifier: TokenVerifier
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let token = bearerToken(authorization: request.headers[.authorization], query: request.uri.query) ?? ""
        switch verifier.verify(token, now: unixNow()) {
        case .success(let verified):
            var context = context
            context.token = verified
            return try await next(request, context)
        case .failure(let failure):
            metrics.authFailed(failure)
            throw APIError.unauthorized(failure)
        }
    }
}

/// CORS for the HTTP API: an allowed `Origin` is echoed back; preflight
/// requests are answered here. Without `ALLOWED_ORIGINS` (development) every
/// origin is allowed.
struct CORSMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let configuration: GatewayConfiguration

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin] else { return try await next(request, context) }
        let allowed = configuration.allows(origin: origin)
        if request.method == .options {
            guard allowed else { throw APIError(.forbidden, code: "origin_not_allowed", message: "origin \(origin) is not allowed") }
            return Response(status: .noContent, headers: [
                .accessControlAllowOrigin: origin,
                .accessControlAllowMethods: "GET, POST, OPTIONS",
                .accessControlAllowHeaders: "Authorization, Content-Type, Last-Event-ID",
                .accessControlMaxAge: "600",
                .vary: "Origin",
            ])
        }
        do {
            var response = try await next(request, context)
            if allowed {
                response.headers[.accessControlAllowOrigin] = origin
                response.headers[.vary] = "Origin"
            }
            return response
        } catch let error as APIError where allowed {
            // Let the browser read the error, too.
            throw CORSError(base: error, origin: origin)
        }
    }
}

/// An API error that carries CORS headers.
struct CORSError: HTTPResponseError {
    let base: APIError
    let origin: String
    var status: HTTPResponse.Status { base.status }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try base.response(from: request, context: context)
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[.vary] = "Origin"
        return response
    }
}

/// Unix seconds now.
func unixNow() -> Int64 {
    Int64(Date().timeIntervalSince1970)
}

import Foundation

/// Times every HTTP request by route, method and status
/// (`notify_http_request_duration_seconds`) and logs it with the request id
/// (`hb.request.id`): at debug, or at warning for a server error. The path
/// is logged without its query string, which may carry a token.
struct RequestMetricsMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            finished(request, context: context, status: response.status.code, since: start)
            return response
        } catch {
            finished(request, context: context, status: (error as? any HTTPResponseError)?.status.code ?? 500, since: start)
            throw error
        }
    }

    private func finished(_ request: Request, context: Context, status: Int, since start: ContinuousClock.Instant) {
        let path = request.uri.path
        metrics.request(path: path, method: request.method.rawValue, status: status, since: start)
        let elapsed = ContinuousClock.now - start
        context.logger.log(level: status >= 500 ? .warning : .debug, "request", metadata: [
            "method": .string(request.method.rawValue), "path": .string(path), "status": .stringConvertible(status),
            "ms": .stringConvertible((elapsed / .microseconds(1)).rounded() / 1_000),
        ])
    }
}
