import Foundation
import ProcessSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A TCP connection to the gateway on 127.0.0.1 over a plain blocking
/// socket, for clients no library would write: one that never reads, one
/// that sends its request a byte at a time, one that sends a 2 MiB frame.
/// Its calls block; run them off the cooperative pool.
final class RawSocket: Sendable {
    /// A WebSocket frame as the server sent it.
    struct Frame: Sendable {
        let opcode: UInt8
        let payload: [UInt8]

        var text: String { String(decoding: payload, as: UTF8.self) }
        /// The status code of a close frame.
        var closeCode: Int? { opcode == 8 && payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : nil }
        var closeReason: String { opcode == 8 ? String(decoding: payload.dropFirst(2), as: UTF8.self) : "" }
    }

    let fd: Int32
    /// Bytes read but not yet taken as a frame.
    private let pending = Mutex<[UInt8]>([])

    /// Connects; `receiveBuffer` sets SO_RCVBUF first (a small window for a client that never reads).
    init(port: Int, receiveBuffer: Int32? = nil) throws(ChaosError) {
        do {
            fd = try LoopbackSocket.connect(port: port, receiveBuffer: receiveBuffer)
        } catch {
            throw ChaosError(error.description)
        }
    }

    deinit { Glibc.close(fd) }

    /// Ends the connection now (the descriptor itself is released with the object).
    func hangUp() {
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Sends everything; `false` when the peer is gone.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { return false }
            sent += count
        }
        return true
    }

    /// Reads what is there within `timeoutMilliseconds`; `nil` at end of
    /// stream or on an error (a reset).
    private func fill(timeoutMilliseconds: Int32) -> Bool? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, timeoutMilliseconds) > 0 else { return false }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = recv(fd, &chunk, chunk.count, 0)
        if count <= 0 { return nil }
        pending.withLock { $0 += chunk[0..<count] }
        return true
    }

    /// Sends a WebSocket upgrade for `path` and reads the response head;
    /// the status code (101 when upgraded).
    func upgrade(path: String, port: Int, timeoutMilliseconds: Int32 = 10_000) throws(ChaosError) -> Int {
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
            + HTTPProbe.webSocketUpgrade.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
        guard send(Array(request.utf8)) else { throw ChaosError("the gateway closed before the upgrade request was sent") }
        let deadline = ContinuousClock.now + .milliseconds(Int(timeoutMilliseconds))
        let separator: [UInt8] = [13, 10, 13, 10]
        while true {
            let head: String? = pending.withLock { buffer in
                guard let end = buffer.indices.dropLast(3).first(where: { buffer[$0..<$0 + 4].elementsEqual(separator) }) else { return nil }
                defer { buffer.removeFirst(end + 4) }
                return String(decoding: buffer[..<end], as: UTF8.self)
            }
            if let head {
                let statusLine = head.components(separatedBy: "\r\n").first ?? ""
                guard let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
                    throw ChaosError("bad status line: \(statusLine)")
                }
                return status
            }
            let left = Int32(max(seconds(deadline - ContinuousClock.now) * 1_000, 0))
            guard left > 0, let progress = fill(timeoutMilliseconds: left), progress else {
                throw ChaosError("no upgrade response within \(timeoutMilliseconds) ms")
            }
        }
    }

    /// The next frame within `timeoutMilliseconds`; `nil` on timeout or at end of stream.
    func nextFrame(timeoutMilliseconds: Int32) -> Frame? {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeoutMilliseconds))
        while true {
            if let frame = takeFrame() { return frame }
            let left = Int32(max(seconds(deadline - ContinuousClock.now) * 1_000, 0))
            guard left > 0, let progress = fill(timeoutMilliseconds: left), progress else { return nil }
        }
    }

    /// Reads frames until the server closes the connection or nothing
    /// arrives for `idleMilliseconds`; whether it was closed.
    func drain(idleMilliseconds: Int32, _ body: (Frame) -> Void) -> Bool {
        while true {
            while let frame = takeFrame() { body(frame) }
            guard let progress = fill(timeoutMilliseconds: idleMilliseconds) else { return true }
            if !progress { return false }
        }
    }

    /// Whether the server has closed the connection (end of stream or
    /// reset), without waiting and without consuming data.
    var isClosedByPeer: Bool {
        var byte: UInt8 = 0
        let count = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    private func takeFrame() -> Frame? {
        pending.withLock { buffer in Self.takeFrame(from: &buffer) }
    }

    private static func takeFrame(from buffer: inout [UInt8]) -> Frame? {
        guard buffer.count >= 2 else { return nil }
        var length = Int(buffer[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard buffer.count >= 4 else { return nil }
            length = Int(buffer[2]) << 8 | Int(buffer[3])
            offset = 4
        } else if length == 127 {
            guard buffer.count >= 10 else { return nil }
            length = buffer[2..<10].reduce(0) { $0 << 8 | Int($1) }
            offset = 10
        }
        guard buffer.count >= offset + length else { return nil }
        let frame = Frame(opcode: buffer[0] & 0x0F, payload: Array(buffer[offset..<offset + length]))
        buffer.removeFirst(offset + length)
        return frame
    }

    /// A client frame (masked, as RFC 6455 requires) carrying `payload`.
    static func clientFrame(opcode: UInt8, payload: [UInt8]) -> [UInt8] {
        var frame: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            frame += (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset & 3] }
        return frame
    }
}
