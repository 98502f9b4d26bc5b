import Dispatch
public import Foundation
import ProcessSupport

/// A minimal HTTP/1.1 client over a plain socket, for tests that need what
/// higher-level clients hide: the exact status line of a refused WebSocket
/// upgrade, or a Server-Sent Events stream read as it arrives.
public final class RawHTTPConnection: @unchecked Sendable {
    private let socket: Int32
    private let queue = DispatchQueue(label: "raw-http")
    /// Everything read so far. Touched only on `queue`.
    private var received: [UInt8] = []

    /// Connects to 127.0.0.1:`port`.
    public init(port: Int) throws {
        socket = try LoopbackSocket.connect(port: port)
    }

    deinit {
        close(socket)
    }

    /// Sends a request (HTTP/1.1, `Host` added).
    public func send(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = []) throws {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "POST" { text += "Content-Length: \(body.count)\r\n" }
        text += "\r\n"
        let bytes = Array(text.utf8) + body
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw RawHTTPError("send: \(String(cString: strerror(errno)))") }
            offset += sent
        }
    }

    /// Reads until `predicate` holds for what was received, the peer
    /// closes, or the timeout passes; returns everything received.
    public func read(timeout: Duration = .seconds(10), until predicate: @escaping @Sendable (String) -> Bool) async -> String {
        await withCheckedContinuation { continuation in
            queue.async { [self] in
                let deadline = ContinuousClock.now + timeout
                var buffer = [UInt8](repeating: 0, count: 65_536)
                while !predicate(String(decoding: received, as: UTF8.self)), ContinuousClock.now < deadline {
                    var poller = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
                    guard poll(&poller, 1, 50) > 0 else { continue }
                    let count = recv(socket, &buffer, buffer.count, 0)
                    if count <= 0 { break }
                    received += buffer[0..<count]
                }
                continuation.resume(returning: String(decoding: received, as: UTF8.self))
            }
        }
    }

    /// Reads a whole response (the request should ask `Connection: close`).
    public func response(timeout: Duration = .seconds(10)) async throws -> RawHTTPResponse {
        let text = await read(timeout: timeout) { text in
            guard let end = text.range(of: "\r\n\r\n") else { return false }
            let head = text[..<end.lowerBound].lowercased()
            if let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
               let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) {
                return text.utf8.count - text[..<end.upperBound].utf8.count >= length
            }
            return false
        }
        return try RawHTTPResponse(text)
    }
}

/// A parsed response: status, headers (lower-cased names) and body.
public struct RawHTTPResponse: Sendable {
    public let status: Int
    public let headers: [String: String]
    public let body: String

    public init(_ text: String) throws {
        guard let end = text.range(of: "\r\n\r\n") else { throw RawHTTPError("no complete response head in: \(text.prefix(200))") }
        let lines = text[..<end.lowerBound].split(separator: "\r\n")
        guard let statusLine = lines.first, let code = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw RawHTTPError("bad status line in: \(text.prefix(200))")
        }
        status = code
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        self.headers = headers
        body = String(text[end.upperBound...])
    }

    /// The body as a JSON object.
    public var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
    }
}

/// One request on a new connection, `Connection: close`.
public func httpRequest(
    port: Int, _ method: String, _ path: String, headers: [(String, String)] = [], body: String = ""
) async throws -> RawHTTPResponse {
    let connection = try RawHTTPConnection(port: port)
    try connection.send(method, path, headers: headers + [("Connection", "close")], body: Array(body.utf8))
    return try await connection.response()
}

/// A request failed at the socket level.
public struct RawHTTPError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

import Glibc
