import Dispatch
import Foundation

/// A response read off the wire.
struct HTTPReply: Sendable {
    let status: Int
    /// Lower-cased names.
    let headers: [String: String]
    let body: [UInt8]

    var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }
}

/// One HTTP/1.1 request per TCP connection to 127.0.0.1, over a blocking
/// socket: the suite sees exactly what the gateway answers (a refused
/// WebSocket upgrade included) and times it without a client library in
/// between. Blocking calls run on their own queue, never on the
/// cooperative pool.
enum HTTPProbe {
    private static let queue = DispatchQueue(label: "chaos.http", attributes: .concurrent)

    /// The headers of a WebSocket upgrade request (RFC 6455's sample key).
    static let webSocketUpgrade = [
        ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]

    /// Sends one request and reads the whole response; blocks the thread.
    static func exchange(port: Int, method: String = "GET", path: String, headers: [(String, String)] = [], body: [UInt8] = [], timeoutMilliseconds: Int32 = 5_000) throws(ChaosError) -> HTTPReply {
        let socket = try RawSocket(port: port)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty { head += "Content-Length: \(body.count)\r\n" }
        if !headers.contains(where: { $0.0.lowercased() == "connection" }) { head += "Connection: close\r\n" }
        guard socket.send(Array((head + "\r\n").utf8) + body) else {
            throw ChaosError("send to 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            if let reply = try complete(received) { return reply }
            var poller = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, timeoutMilliseconds) > 0 else {
                throw ChaosError("no complete response from 127.0.0.1:\(port)\(path.split(separator: "?").first.map { String($0) } ?? "") within \(timeoutMilliseconds) ms")
            }
            let count = recv(socket.fd, &buffer, buffer.count, 0)
            if count <= 0 {
                guard let reply = try complete(received, closed: true) else {
                    throw ChaosError("127.0.0.1:\(port) closed the connection after \(received.count) bytes")
                }
                return reply
            }
            received += buffer[0..<count]
        }
    }

    /// The response in `bytes`, once it is all there.
    private static func complete(_ bytes: [UInt8], closed: Bool = false) throws(ChaosError) -> HTTPReply? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.indices.dropLast(3).first(where: { bytes[$0..<$0 + 4].elementsEqual(separator) }) else { return nil }
        let lines = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        guard let status = lines.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw ChaosError("bad status line: \(lines.first ?? "")")
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let body = Array(bytes[(end + 4)...])
        if let length = headers["content-length"].flatMap({ Int($0) }) {
            return body.count >= length ? HTTPReply(status: status, headers: headers, body: Array(body.prefix(length))) : nil
        }
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            return dechunked(body).map { HTTPReply(status: status, headers: headers, body: $0) }
        }
        return closed || status == 101 || status == 204 || status == 304 ? HTTPReply(status: status, headers: headers, body: body) : nil
    }

    /// The body of a complete chunked encoding, `nil` until the last chunk.
    private static func dechunked(_ bytes: [UInt8]) -> [UInt8]? {
        var body: [UInt8] = []
        var index = 0
        while let lineEnd = bytes[index...].indices.dropLast().first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }) {
            guard let size = Int(String(decoding: bytes[index..<lineEnd], as: UTF8.self).split(separator: ";").first ?? "", radix: 16) else { return nil }
            let start = lineEnd + 2
            if size == 0 { return body }
            guard start + size + 2 <= bytes.count else { return nil }
            body += bytes[start..<start + size]
            index = start + size + 2
        }
        return nil
    }

    /// ``exchange(port:method:path:headers:body:timeoutMilliseconds:)`` off the cooperative pool.
    static func request(port: Int, method: String = "GET", path: String, headers: [(String, String)] = [], body: [UInt8] = []) async throws(ChaosError) -> HTTPReply {
        let result: Result<HTTPReply, ChaosError> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(ChaosError) {
                    continuation.resume(returning: .success(try exchange(port: port, method: method, path: path, headers: headers, body: body)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    /// Runs `body` on a thread of its own (for loops of blocking requests).
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: body()) }.start()
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
