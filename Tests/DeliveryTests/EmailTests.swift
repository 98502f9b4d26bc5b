import Delivery
import Foundation
import NATS
import NIOCore
import NIOPosix
import Notifications
import Testing
import TestSupport

/// Email end to end: a real worker, dispatcher and SQLite store, and a real
/// SMTP server on loopback (STARTTLS, AUTH) whose received messages are
/// read back as Python's `email` package parses them.
@Suite("Email over SMTP", .enabled(if: SMTPServer.isAvailable, "aiosmtpd is not installed (scripts/install-test-servers.sh)"))
struct EmailTests {
    static let unsubscribeSecret = "unsubscribe-secret-of-at-least-32-bytes"
    static let links = UnsubscribeLinks(baseURL: "https://notify.example.com", secret: unsubscribeSecret)

    private func sender(
        _ server: SMTPServer, security: SMTPConfiguration.Security = .starttls, password: String? = SMTPServer.password,
        trusted: Bool = true
    ) throws -> EmailSender {
        let client = try SMTPClient(SMTPConfiguration(
            host: "localhost", port: server.port, security: security,
            username: password == nil ? nil : SMTPServer.username, password: password,
            timeout: .seconds(10), trustRootsFile: trusted ? server.certificate : nil))
        return EmailSender(
            client: client, from: try #require(Mailbox("Notify <notify@example.com>")), templates: try DeliveryHarness.templates(),
            unsubscribe: Self.links)
    }

    private func address(_ owner: String, _ email: String, _ harness: DeliveryHarness) async throws {
        try await harness.repository.setDeliveryAddresses(DeliveryAddresses(email: email), owner: owner)
    }

    @Test("a new notification arrives over STARTTLS and AUTH as text + HTML, with its subject, ids and a one-click unsubscribe link")
    func delivered() async throws {
        try await SMTPServer.run { server in
            let sender = try sender(server)
            try await DeliveryHarness.run(senders: [sender]) { harness in
                try await address("u1", "ana@example.com", harness)
                try await harness.like(owner: "u1", trigger: "zoe", username: "Zoë")
                let delivery = try #require(try await harness.finalDelivery("u1", .email))
                #expect(delivery.status == .sent, "\(delivery.error ?? "")")
                #expect(delivery.attempts == 1)
                let record = try #require(try await harness.newest("u1"))
                let messages = try server.messages()
                try #require(messages.count == 1)
                let message = messages[0]
                #expect(message["tls"] as? Bool == true)
                #expect(message["auth_user"] as? String == SMTPServer.username)
                #expect(message["mail_from"] as? String == "notify@example.com")
                #expect(message["rcpt_tos"] as? [String] == ["ana@example.com"])
                #expect(message["defects"] as? [String] == [], "the message must parse cleanly")
                #expect((message["max_line_length"] as? Int ?? 999) <= 998)
                // Lines stay within 78, but for the unsubscribe link, which
                // cannot be folded.
                let long = (message["raw"] as? String ?? "").components(separatedBy: "\r\n").filter { $0.utf8.count > 78 }
                #expect(long.allSatisfy { $0.hasPrefix("List-Unsubscribe: <https://") }, "\(long)")

                let headers = try #require(message["headers"] as? [String: [String]])
                #expect(headers["Subject"] == ["Zoë liked your post"])
                #expect((message["raw"] as? String)?.contains("Subject: =?utf-8?b?") == true, "a non-ASCII subject is RFC 2047-encoded")
                #expect(headers["From"] == ["Notify <notify@example.com>"])
                #expect(headers["To"] == ["ana@example.com"])
                #expect(headers["Message-ID"] == ["<\(record.id)@example.com>"])
                #expect(headers["Auto-Submitted"] == ["auto-generated"])
                #expect(headers["List-Unsubscribe-Post"] == ["List-Unsubscribe=One-Click"])
                let unsubscribe = try #require(headers["List-Unsubscribe"]?.first)
                let link = Self.links.url(owner: "u1", channel: .email)
                #expect(unsubscribe == "<\(link)>")
                let query = try #require(URLComponents(string: link)?.queryItems)
                let token = try #require(query.first { $0.name == "token" }?.value)
                #expect(Self.links.verify(owner: "u1", channel: .email, token: token))
                #expect(!Self.links.verify(owner: "u2", channel: .email, token: token))

                #expect(message["content_type"] as? String == "multipart/alternative")
                let parts = try #require(message["parts"] as? [[String: Any]])
                #expect(parts.map { $0["content_type"] as? String } == ["text/plain", "text/html"])
                #expect(parts.allSatisfy { $0["charset"] as? String == "utf-8" })
                let text = try #require(message["text"] as? String)
                #expect(text.contains("Sunset over the bay"))
                #expect(text.contains("https://app.example.com/"))
                #expect(text.contains("Unsubscribe: \(link)"))
                let html = try #require(message["html"] as? String)
                #expect(html.contains("Zoë liked your post"))
                #expect(html.contains("Sunset over the bay"))
                #expect(html.contains(#"href="\#(link.replacingOccurrences(of: "&", with: "&amp;"))""#), "the HTML part links the same unsubscribe URL")
            }
        }
    }

    @Test("550 fails at once and is dead-lettered; 451 is retried until the attempts run out")
    func rejections() async throws {
        try await SMTPServer.run { server in
            let sender = try sender(server)
            try await DeliveryHarness.run(senders: [sender]) { harness in
                try await address("u2", "reject@example.com", harness)
                try await harness.like(owner: "u2")
                let rejected = try #require(try await harness.finalDelivery("u2", .email))
                #expect(rejected.status == .failed)
                #expect(rejected.attempts == 1)
                #expect(rejected.error?.hasPrefix("smtp_550") == true, "\(rejected.error ?? "")")

                try await address("u3", "busy@example.com", harness)
                try await harness.like(owner: "u3")
                let busy = try #require(try await harness.finalDelivery("u3", .email))
                #expect(busy.status == .failed)
                #expect(busy.attempts == 3)
                #expect(busy.error?.hasPrefix("smtp_451") == true, "\(busy.error ?? "")")

                let reasons = try await harness.deadLetters(.email).map { $0.message.headers["Notify-Reason"] }
                #expect(reasons == ["smtp_550", "smtp_451"])
                #expect(try server.messages().isEmpty)
            }
        }
    }

    @Test("a wrong password, a server without STARTTLS and an untrusted certificate fail with the reason; credentials are never sent in the clear")
    func refusals() async throws {
        try await SMTPServer.run { server in
            try await DeliveryHarness.run(senders: [try sender(server, password: "wrong")]) { harness in
                try await address("u4", "ana@example.com", harness)
                try await harness.like(owner: "u4")
                let denied = try #require(try await harness.finalDelivery("u4", .email))
                #expect(denied.status == .failed)
                #expect(denied.attempts == 1)
                #expect(denied.error?.hasPrefix("smtp_535") == true, "\(denied.error ?? "")")
                #expect(denied.error?.contains("wrong") == false, "the error never shows the password")
            }
            try await DeliveryHarness.run(senders: [try sender(server, trusted: false)]) { harness in
                try await address("u5", "ana@example.com", harness)
                try await harness.like(owner: "u5")
                let untrusted = try #require(try await harness.finalDelivery("u5", .email))
                #expect(untrusted.status == .failed)
                #expect(untrusted.attempts == 3, "a TLS failure may pass: retried")
                #expect(untrusted.error?.hasPrefix("tls") == true, "\(untrusted.error ?? "")")
            }
            #expect(try server.messages().isEmpty)
        }
        try await SMTPServer.run(tls: "none", authenticated: false) { server in
            try await DeliveryHarness.run(senders: [try sender(server)]) { harness in
                try await address("u6", "ana@example.com", harness)
                try await harness.like(owner: "u6")
                let plain = try #require(try await harness.finalDelivery("u6", .email))
                #expect(plain.status == .failed)
                #expect(plain.attempts == 1)
                #expect(plain.error?.hasPrefix("smtp_no_starttls") == true, "\(plain.error ?? "")")
            }
            // A relay on a trusted network, on purpose: no TLS, no AUTH.
            try await DeliveryHarness.run(senders: [try sender(server, security: .none, password: nil)]) { harness in
                try await address("u7", "ana@example.com", harness)
                try await harness.like(owner: "u7")
                #expect(try await harness.finalDelivery("u7", .email)?.status == .sent)
                let messages = try server.messages()
                #expect(messages.count == 1)
                #expect(messages.first?["tls"] as? Bool == false)
            }
        }
    }

    @Test("a server that accepts the connection and never answers is a transient timeout, within the deadline")
    func silentServer() async throws {
        // Accepts connections and never writes a byte.
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(listener.localAddress?.port)
        let client = try SMTPClient(SMTPConfiguration(host: "127.0.0.1", port: port, security: .none, timeout: .seconds(1)))
        let started = ContinuousClock.now
        do {
            try await client.send(Array("Subject: x\r\n\r\nx\r\n".utf8), from: "notify@example.com", to: "ana@example.com")
            Issue.record("a silent server cannot accept a message")
        } catch {
            #expect(error.isTransient)
            #expect(error.description.hasPrefix("timeout"), "\(error)")
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        try await listener.close()
    }

    @Test("a long non-ASCII subject is split into encoded words that decode back to it")
    func longSubject() throws {
        let subject = String(repeating: "Grüße, Zoë — ", count: 12) + "✓"
        let message = EmailMessage(
            from: try #require(Mailbox("Zoë Notify <notify@example.com>")), to: "ana@example.com", subject: subject, text: "hello\n.dot\n",
            html: nil, messageID: "id@example.com", date: Date(timeIntervalSince1970: 0), unsubscribeURL: nil)
        let raw = String(decoding: message.rendered(), as: UTF8.self)
        let lines = raw.components(separatedBy: "\r\n")
        #expect(lines.allSatisfy { $0.utf8.count <= 78 })
        // Unfold the header and decode each word: the subject comes back whole.
        let start = try #require(lines.firstIndex { $0.hasPrefix("Subject: ") })
        var words: [String] = [String(lines[start].dropFirst("Subject: ".count))]
        for line in lines[(start + 1)...] {
            guard line.hasPrefix(" ") else { break }
            words.append(String(line.dropFirst()))
        }
        let decoded = words.map { word -> String in
            let base64 = word.dropFirst("=?utf-8?b?".count).dropLast(2)
            return String(decoding: Data(base64Encoded: String(base64)) ?? Data(), as: UTF8.self)
        }.joined()
        #expect(decoded == subject)
        #expect(words.count > 1)
        #expect(lines.contains("From: =?utf-8?b?\(Data("Zoë Notify".utf8).base64EncodedString())?= <notify@example.com>"))
        #expect(lines.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000"))
    }

    @Test("SMTP_FROM-style mailboxes are read, and bad ones refused")
    func mailboxes() {
        #expect(Mailbox("Notify <notify@example.com>") == Mailbox("\"Notify\" <notify@example.com>"))
        #expect(Mailbox("notify@example.com")?.name == nil)
        #expect(Mailbox("Notify <notify@example.com>")?.address == "notify@example.com")
        for bad in ["notify", "Notify <notify>", "a@b.example\r\nBcc: x@y.example", "<>", "Notify notify@example.com", "x <a b@c.example>"] {
            #expect(Mailbox(bad) == nil, "\(bad)")
        }
    }
}
