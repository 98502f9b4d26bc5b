public import Hummingbird
import Foundation
import JSON
import NIOCore

/// The request context of every gateway route: Hummingbird's core storage
/// plus the verified token, once authentication ran.
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by the authentication middleware.
    public var token: VerifiedToken?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        token = nil
    }

    /// Request bodies are small JSON documents.
    public var maxUploadSize: Int { 64 * 1024 }
}

/// An error answered as `{"error":{"code":…,"message":…}}` with its status.
/// Every failure the gateway reports to a client goes through here.
public struct APIError: HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String

    public init(_ status: HTTPResponse.Status, code: String, message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var json = JSONWriterBridge()
        json.errorBody(code: code, message: message)
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: json.bytes)))
    }

    static func unauthorized(_ failure: TokenFailure) -> APIError {
        APIError(.unauthorized, code: "unauthorized", message: failure.message)
    }

    static func badRequest(_ message: String) -> APIError {
        APIError(.badRequest, code: "bad_request", message: message)
    }
}
