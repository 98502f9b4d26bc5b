public import Foundation
import Notifications

/// A mailbox as in `From:`: an address and an optional display name.
public struct Mailbox: Sendable, Hashable {
    public let address: String
    public let name: String?

    /// `Name <user@example.com>` or `user@example.com`; `nil` when it is
    /// neither (no `@`, a line break, a stray `<` or `>`).
    public init?(_ text: String) {
        let text = text.trimmingCharacters(in: .whitespaces)
        var name: String?
        var address = text
        if text.hasSuffix(">"), let open = text.lastIndex(of: "<") {
            address = String(text[text.index(after: open)..<text.index(before: text.endIndex)])
            let display = text[..<open].trimmingCharacters(in: .whitespaces)
            let unquoted = display.hasPrefix("\"") && display.hasSuffix("\"") && display.count >= 2 ? String(display.dropFirst().dropLast()) : display
            name = unquoted.isEmpty ? nil : unquoted
        }
        guard DeliveryAddresses.isEmailAddress(address), !(name ?? "").contains(where: { $0.isNewline || $0 == "<" || $0 == ">" || $0 == "\"" }) else { return nil }
        self.address = address
        self.name = name
    }

    /// As a header value, the name encoded when it is not plain ASCII.
    var header: String {
        guard let name else { return address }
        let plain = name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || " .-_'".contains($0)) }
        return (plain ? "\"\(name)\"" : EmailMessage.encodedWords(name)) + " <\(address)>"
    }
}

/// An email as it goes over SMTP (RFC 5322, MIME): a plain-text part and,
/// when there is one, an HTML alternative, both UTF-8 in base64; a
/// subject encoded when it is not ASCII; one-click unsubscribe headers
/// (RFC 2369, RFC 8058).
public struct EmailMessage: Sendable {
    public var from: Mailbox
    public var to: String
    public var subject: String
    public var text: String
    public var html: String?
    /// Unique per notification: a repeat of the same notification carries
    /// the same id, which mail systems use to drop duplicates.
    public var messageID: String
    public var date: Date
    /// The HTTPS link whose POST unsubscribes (`List-Unsubscribe`).
    public var unsubscribeURL: String?

    public init(
        from: Mailbox, to: String, subject: String, text: String, html: String?, messageID: String, date: Date, unsubscribeURL: String?
    ) {
        self.from = from
        self.to = to
        self.subject = subject
        self.text = text
        self.html = html
        self.messageID = messageID
        self.date = date
        self.unsubscribeURL = unsubscribeURL
    }

    /// The message in wire form: CRLF lines, none over 78 characters.
    public func rendered(boundary: String = "=_notify_" + UUID().uuidString.replacingOccurrences(of: "-", with: "")) -> [UInt8] {
        var lines: [String] = [
            "From: " + from.header,
            "To: " + to,
            "Subject: " + (subject.allSatisfy(\.isASCII) && subject.utf8.count <= 900 ? subject : Self.encodedWords(subject)),
            "Date: " + Self.dateFormatter.string(from: date),
            "Message-ID: <\(messageID)>",
            "MIME-Version: 1.0",
            // RFC 3834: no vacation replies to a notification.
            "Auto-Submitted: auto-generated",
        ]
        if let unsubscribeURL {
            lines.append("List-Unsubscribe: <\(unsubscribeURL)>")
            lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        }
        if let html {
            lines.append("Content-Type: multipart/alternative;\r\n boundary=\"\(boundary)\"")
            lines.append("")
            lines.append("--" + boundary)
            lines += Self.part(text, type: "text/plain")
            lines.append("--" + boundary)
            lines += Self.part(html, type: "text/html")
            lines.append("--" + boundary + "--")
        } else {
            lines += Self.part(text, type: "text/plain")
        }
        return Array((lines.joined(separator: "\r\n") + "\r\n").utf8)
    }

    /// Headers and base64 lines of one UTF-8 text part.
    private static func part(_ content: String, type: String) -> [String] {
        let normalised = content.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n", with: "\r\n")
        let encoded = Data(normalised.utf8).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed])
        return ["Content-Type: \(type); charset=utf-8", "Content-Transfer-Encoding: base64", ""] + encoded.components(separatedBy: "\r\n")
    }

    /// RFC 2047 encoded words (`=?utf-8?b?…?=`), each under 76
    /// characters and never splitting a character, folded onto lines.
    static func encodedWords(_ text: String) -> String {
        var words: [String] = []
        var chunk: [UInt8] = []
        for character in text {
            let bytes = Array(String(character).utf8)
            // 39 bytes are 52 base64 characters: with `=?utf-8?b?`, `?=`
            // and a header name such as `Subject: ` a line stays within 76.
            if chunk.count + bytes.count > 39, !chunk.isEmpty {
                words.append("=?utf-8?b?" + Data(chunk).base64EncodedString() + "?=")
                chunk = []
            }
            chunk += bytes
        }
        if !chunk.isEmpty || words.isEmpty { words.append("=?utf-8?b?" + Data(chunk).base64EncodedString() + "?=") }
        return words.joined(separator: "\r\n ")
    }

    private static let dateFormatter: DateFormatter = {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss Z"
        return formatter
    }()
}
