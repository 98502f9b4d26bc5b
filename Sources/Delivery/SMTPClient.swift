import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// Where and how to hand email over: an SMTP submission server.
public struct SMTPConfiguration: Sendable {
    /// How the connection is protected.
    public enum Security: String, Sendable, CaseIterable {
        /// Plain TCP, then `STARTTLS` before anything else; a server that
        /// does not offer it is refused (port 587).
        case starttls
        /// TLS from the first byte (port 465).
        case tls
        /// No TLS at all: only for a relay on the same host or network.
        case none
    }

    public var host: String
    public var port: Int
    public var security: Security
    /// Both or neither; sent only over TLS (AUTH PLAIN, else LOGIN).
    public var username: String?
    public var password: String?
    /// The name this host gives in `EHLO`.
    public var heloName: String
    /// How long one message may take, connection to `QUIT`.
    public var timeout: Duration
    /// PEM file of the certificates to trust instead of the system's
    /// (a private CA, a self-signed relay).
    public var trustRootsFile: String?

    public init(
        host: String, port: Int? = nil, security: Security = .starttls, username: String? = nil, password: String? = nil,
        heloName: String = "localhost", timeout: Duration = .seconds(30), trustRootsFile: String? = nil
    ) {
        self.host = host
        self.port = port ?? (security == .tls ? 465 : security == .starttls ? 587 : 25)
        self.security = security
        self.username = username
        self.password = password
        self.heloName = heloName
        self.timeout = timeout
        self.trustRootsFile = trustRootsFile
    }
}

/// Why a message was not handed over.
public struct SMTPError: Error, CustomStringConvertible, Sendable {
    /// The server's reply code, when it gave one (`451`, `550`, …).
    public let replyCode: Int?
    /// Whether trying again later may succeed: 4xx replies, timeouts,
    /// lost connections.
    public let isTransient: Bool
    public let description: String

    static func reply(_ reply: SMTPReply, to command: String) -> SMTPError {
        SMTPError(
            replyCode: reply.code, isTransient: (400..<500).contains(reply.code),
            description: "the server answered \(command) with \(reply.code) \(reply.text)")
    }

    static func transient(_ description: String) -> SMTPError {
        SMTPError(replyCode: nil, isTransient: true, description: description)
    }

    static func permanent(_ description: String) -> SMTPError {
        SMTPError(replyCode: nil, isTransient: false, description: description)
    }
}

/// One reply: its code and its lines' text.
struct SMTPReply: Sendable {
    let code: Int
    let lines: [String]
    var text: String { lines.joined(separator: " / ") }
}

/// An SMTP client (RFC 5321) speaking just what submission needs:
/// `EHLO`, `STARTTLS` (RFC 3207), `AUTH PLAIN`/`LOGIN` (RFC 4954),
/// `MAIL`, `RCPT`, `DATA`, `QUIT`. One connection per message.
public struct SMTPClient: Sendable {
    public let configuration: SMTPConfiguration
    private let tls: NIOSSLContext?

    /// Throws when the trust roots file cannot be read.
    public init(_ configuration: SMTPConfiguration) throws(SMTPError) {
        self.configuration = configuration
        guard configuration.security != .none else {
            tls = nil
            return
        }
        var settings = TLSConfiguration.makeClientConfiguration()
        settings.minimumTLSVersion = .tlsv12
        if let file = configuration.trustRootsFile {
            settings.trustRoots = .file(file)
        }
        do {
            tls = try NIOSSLContext(configuration: settings)
        } catch {
            throw .permanent("SMTP TLS: \(error)" + (configuration.trustRootsFile.map { " (is \($0) a PEM file of certificates?)" } ?? ""))
        }
    }

    /// Hands `message` over for `recipient`, from `sender` (bare
    /// addresses); returns once the server accepted it (`250` after the
    /// data).
    public func send(_ message: [UInt8], from sender: String, to recipient: String) async throws(SMTPError) {
        try await withDeadline { try await self.session((message, sender, recipient)) }
    }

    /// Connects, greets, protects and logs in as a send would, then quits
    /// without sending: what `notify doctor` checks.
    public func verify() async throws(SMTPError) {
        try await withDeadline { try await self.session(nil) }
    }

    /// `body` within the configured timeout, its errors as ``SMTPError``.
    private func withDeadline(_ body: @escaping @Sendable () async throws -> Void) async throws(SMTPError) {
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await body() }
                group.addTask {
                    try await Task.sleep(for: configuration.timeout)
                    throw SMTPError.transient("timeout: the SMTP exchange took longer than \(configuration.timeout)")
                }
                try await group.next()
                group.cancelAll()
            }
        } catch let error as SMTPError {
            throw error
        } catch let error as NIOSSLError {
            throw .transient("tls: \(error)")
        } catch is CancellationError {
            throw .transient("cancelled")
        } catch {
            throw .transient("connection: \(error)")
        }
    }

    /// One connection; with `envelope`, the message is handed over.
    private func session(_ envelope: (message: [UInt8], sender: String, recipient: String)?) async throws {
        let host = configuration.host
        let tls = self.tls
        let implicitTLS = configuration.security == .tls
        let (channel, implicitHandshake) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(10))
            .connect(host: host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    var handshake: EventLoopFuture<Void>?
                    if implicitTLS, let tls {
                        handshake = try Self.addTLS(tls, host: host, to: channel)
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(SMTPLineDecoder()))
                    return (try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel), handshake)
                }
            }
        try await channel.executeThenClose { inbound, outbound in
            try await implicitHandshake?.get()
            var conversation = SMTPConversation(inbound: inbound.makeAsyncIterator(), outbound: outbound)
            try await conversation.expect(220, after: "connecting")
            var extensions = try await conversation.ehlo(configuration.heloName)
            if configuration.security == .starttls {
                guard extensions.contains("STARTTLS"), let tls else {
                    throw SMTPError.permanent("smtp_no_starttls: \(host) does not offer STARTTLS; set SMTP_TLS=tls for port 465, or none for a trusted relay")
                }
                try await conversation.command("STARTTLS", expect: 220)
                // The handshake is awaited before EHLO: a failed one then
                // reports why, not the write it would otherwise race.
                let handshake = try await channel.channel.eventLoop.submit {
                    try Self.addTLS(tls, host: host, to: channel.channel)
                }.get()
                try await handshake.get()
                extensions = try await conversation.ehlo(configuration.heloName)
            }
            if let username = configuration.username, let password = configuration.password {
                try await conversation.authenticate(username: username, password: password, extensions: extensions)
            }
            if let (message, sender, recipient) = envelope {
                let utf8 = extensions.contains("SMTPUTF8") && !(sender + recipient).allSatisfy(\.isASCII) ? " SMTPUTF8" : ""
                try await conversation.command("MAIL FROM:<\(sender)>" + utf8, expect: 250)
                try await conversation.command("RCPT TO:<\(recipient)>", expect: 250, 251)
                try await conversation.command("DATA", expect: 354)
                try await conversation.data(message)
            }
            _ = try? await conversation.command("QUIT", expect: 221)
        }
    }

    /// Puts TLS first in `channel`'s pipeline (on its event loop); the
    /// future completes with the handshake, or fails with its error.
    private static func addTLS(_ context: NIOSSLContext, host: String, to channel: any Channel) throws -> EventLoopFuture<Void> {
        // SNI carries names only; an IP address is checked against the
        // certificate's IP entries without it.
        let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        let handler = try NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : host)
        let handshake = channel.eventLoop.makePromise(of: Void.self)
        try channel.pipeline.syncOperations.addHandler(handler, position: .first)
        try channel.pipeline.syncOperations.addHandler(TLSHandshakeWatch(handshake), position: .after(handler))
        return handshake.futureResult
    }
}

/// Sits behind the TLS handler and settles `handshake` with the first of:
/// the handshake completing, an error, the connection closing.
private final class TLSHandshakeWatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let handshake: EventLoopPromise<Void>
    private var settled = false

    init(_ handshake: EventLoopPromise<Void>) { self.handshake = handshake }

    private func settle(_ result: Result<Void, any Error>) {
        guard !settled else { return }
        settled = true
        handshake.completeWith(result)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent { settle(.success(())) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settle(.failure(error))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        settle(.failure(SMTPError.transient("tls: the server closed the connection during the TLS handshake")))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        settle(.failure(ChannelError.ioOnClosedChannel))
    }
}

/// The lines of one SMTP exchange, in order.
private struct SMTPConversation {
    var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

    /// The next reply, all its lines (`250-…` continues, `250 …` ends).
    mutating func reply() async throws -> SMTPReply {
        var lines: [String] = []
        while true {
            guard let buffer = try await inbound.next() else {
                throw SMTPError.transient("connection: the server closed the connection")
            }
            let line = String(buffer: buffer)
            let bytes = Array(line.utf8)
            guard bytes.count >= 3, let code = Int(String(decoding: bytes[0..<3], as: UTF8.self)),
                  bytes.count == 3 || bytes[3] == UInt8(ascii: " ") || bytes[3] == UInt8(ascii: "-") else {
                throw SMTPError.transient("protocol: the server sent '\(line.prefix(80))', not an SMTP reply")
            }
            lines.append(bytes.count > 4 ? String(decoding: bytes[4...], as: UTF8.self) : "")
            if bytes.count == 3 || bytes[3] == UInt8(ascii: " ") { return SMTPReply(code: code, lines: lines) }
            guard lines.count < 100 else { throw SMTPError.transient("protocol: a reply of more than 100 lines") }
        }
    }

    mutating func expect(_ codes: Int..., after command: String) async throws {
        let reply = try await reply()
        guard codes.contains(reply.code) else { throw SMTPError.reply(reply, to: command) }
    }

    /// Sends `line` and checks the reply's code; the error names the
    /// command (never a credential).
    @discardableResult
    mutating func command(_ line: String, expect codes: Int..., shown: String? = nil) async throws -> SMTPReply {
        try await outbound.write(ByteBuffer(string: line + "\r\n"))
        let reply = try await reply()
        guard codes.contains(reply.code) else { throw SMTPError.reply(reply, to: shown ?? String(line.prefix(40))) }
        return reply
    }

    /// `EHLO`; the extension keywords the server listed, upper-cased
    /// (`AUTH PLAIN LOGIN` gives `AUTH`, `AUTH PLAIN`, `AUTH LOGIN`).
    mutating func ehlo(_ name: String) async throws -> Set<String> {
        let reply = try await command("EHLO \(name)", expect: 250)
        var keywords = Set<String>()
        for line in reply.lines.dropFirst() {
            let words = line.uppercased().split(separator: " ")
            guard let keyword = words.first else { continue }
            keywords.insert(String(keyword))
            if keyword == "AUTH" { for mechanism in words.dropFirst() { keywords.insert("AUTH \(mechanism)") } }
        }
        return keywords
    }

    mutating func authenticate(username: String, password: String, extensions: Set<String>) async throws {
        if extensions.contains("AUTH PLAIN") {
            let token = Data(([0] + Array(username.utf8) + [0] + Array(password.utf8))).base64EncodedString()
            try await command("AUTH PLAIN \(token)", expect: 235, shown: "AUTH PLAIN")
        } else if extensions.contains("AUTH LOGIN") {
            try await command("AUTH LOGIN", expect: 334)
            try await command(Data(username.utf8).base64EncodedString(), expect: 334, shown: "AUTH LOGIN (username)")
            try await command(Data(password.utf8).base64EncodedString(), expect: 235, shown: "AUTH LOGIN (password)")
        } else {
            throw SMTPError.permanent("smtp_auth_unsupported: the server offers neither AUTH PLAIN nor AUTH LOGIN (offered: \(extensions.filter { $0.hasPrefix("AUTH ") }.sorted().joined(separator: ", ")))")
        }
    }

    /// The message, lines beginning with "." doubled, then `.` alone.
    mutating func data(_ message: [UInt8]) async throws {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(message.count + message.count / 64 + 8)
        var atLineStart = true
        for byte in message {
            if atLineStart && byte == UInt8(ascii: ".") { buffer.writeInteger(UInt8(ascii: ".")) }
            buffer.writeInteger(byte)
            atLineStart = byte == UInt8(ascii: "\n")
        }
        if !atLineStart { buffer.writeString("\r\n") }
        buffer.writeString(".\r\n")
        try await outbound.write(buffer)
        let reply = try await reply()
        guard reply.code == 250 else { throw SMTPError.reply(reply, to: "the message") }
    }
}

/// Splits the server's bytes into lines, without their CRLF.
private struct SMTPLineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > 4_096 { throw SMTPError.transient("protocol: a reply line longer than 4096 bytes") }
            return .needMoreData
        }
        var line = buffer.readSlice(length: newline - buffer.readerIndex + 1)!
        line.moveWriterIndex(to: line.writerIndex - 1)
        if line.readableBytesView.last == UInt8(ascii: "\r") { line.moveWriterIndex(to: line.writerIndex - 1) }
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
}
