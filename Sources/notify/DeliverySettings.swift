import ArgumentParser
import Delivery
import Foundation
import Logging
import NATS
import Notifications
import Templates

/// Flags of delivery beyond the app.
struct DeliveryOptions: ParsableArguments {
    @Option(name: .customLong("delivery-channels"), help: "External channels to deliver on, comma-separated: email, webpush, webhook; none when unset. [env: DELIVERY_CHANNELS]")
    var channels: String?

    @Option(name: .customLong("templates-dir"), help: "Directory of Mustache templates overriding the defaults (<kind>.<channel>.<part>.mustache). [env: TEMPLATES_DIR]")
    var templatesDirectory: String?
}

/// Settings of templates and of the dispatcher (`notify dispatcher`, and
/// `serve` when a channel is on).
struct DeliverySettings {
    /// Channels the dispatcher sends on; empty: no announcements, no dispatcher.
    var channels: Set<DeliveryChannel>
    var configuration: DeliveryConfiguration
    var templates: NotificationTemplates
    var webhookTimeout: Duration
    /// With `email` on.
    var email: EmailSettings?
    /// With `webpush` on.
    var webPush: WebPushSettings?

    /// SMTP and the unsubscribe links.
    struct EmailSettings {
        var client: SMTPClient
        var from: Mailbox
        var unsubscribe: UnsubscribeLinks
    }

    /// The VAPID key and what each push says.
    struct WebPushSettings {
        var key: VAPIDKey
        var subject: String
        var timeToLive: Duration
        var timeout: Duration
    }

    /// The templates of `TEMPLATES_DIR` (the defaults without it), with
    /// links under `APP_URL`.
    static func templates(_ reader: SettingsReader, directory flag: String?) throws -> NotificationTemplates {
        let appURL = reader.string("APP_URL", default: "http://localhost:8080")
        guard let url = URLComponents(string: appURL), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
            throw SettingsError(message: "APP_URL='\(appURL)' must be the web app's http(s) address, such as https://app.example.com (links in emails and pushes start with it)")
        }
        let directory = reader.raw("TEMPLATES_DIR", flag: flag)
        do {
            return try NotificationTemplates(directory: directory, appURL: appURL.hasSuffix("/") ? String(appURL.dropLast()) : appURL)
        } catch {
            throw SettingsError(message: error.message.hasPrefix("TEMPLATES_DIR") ? error.message : "TEMPLATES_DIR: " + error.message)
        }
    }

    init(_ reader: SettingsReader, flags: DeliveryOptions, worker: WorkerSettings?) throws {
        var channels = Set<DeliveryChannel>()
        if let text = reader.raw("DELIVERY_CHANNELS", flag: flags.channels) {
            for name in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) where !name.isEmpty {
                guard let channel = DeliveryChannel(rawValue: name) else {
                    throw SettingsError(message: "DELIVERY_CHANNELS: '\(name)' is not a channel (email, webpush, webhook)")
                }
                channels.insert(channel)
            }
        }
        for channel in channels where !Self.available.contains(channel) {
            throw SettingsError(message: "DELIVERY_CHANNELS: \(channel.rawValue) is not available in this version (available: \(Self.available.map(\.rawValue).sorted().joined(separator: ", ")))")
        }
        self.channels = channels
        templates = try Self.templates(reader, directory: flags.templatesDirectory)
        let streamName = reader.string("DELIVERY_STREAM", default: "NOTIFICATIONS_DELIVERY")
        guard streamName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_-".contains($0)) }) else {
            throw SettingsError(message: "DELIVERY_STREAM: '\(streamName)' may only contain A–Z, a–z, 0–9, '_' and '-'")
        }
        let maxAttempts = try reader.integer("DELIVERY_MAX_ATTEMPTS", default: 8, range: 1...100)
        let backoff = try reader.duration("DELIVERY_BACKOFF", default: .seconds(2))!
        let maxBackoff = try reader.duration("DELIVERY_MAX_BACKOFF", default: .seconds(600))!
        guard maxBackoff >= backoff else {
            throw SettingsError(message: "DELIVERY_MAX_BACKOFF must be at least DELIVERY_BACKOFF")
        }
        let concurrency = try reader.integer("DELIVERY_CONCURRENCY", default: 32, range: 1...1_024)
        configuration = DeliveryConfiguration(
            streamName: streamName, storage: worker?.worker.stream.storage ?? .file, replicas: worker?.worker.stream.replicas ?? 1,
            maxAttempts: maxAttempts, backoff: backoff, maxBackoff: maxBackoff, concurrency: concurrency)
        webhookTimeout = try reader.duration("WEBHOOK_TIMEOUT", default: .seconds(10))!
        if channels.contains(.email) { email = try Self.email(reader) }
        if channels.contains(.webpush) { webPush = try Self.webPush(reader) }
    }

    /// Channels this build can send on.
    static let available: Set<DeliveryChannel> = [.email, .webpush, .webhook]

    /// `SMTP_URL` (`smtp://[user:password@]host[:port]`, or `smtps://` for
    /// TLS from the start), `SMTP_TLS`, `SMTP_FROM`, `SMTP_CA_FILE`,
    /// `SMTP_TIMEOUT`, `SMTP_HELO_NAME`; `PUBLIC_URL` and
    /// `UNSUBSCRIBE_SECRET` (else `JWT_SECRET`) for the unsubscribe links.
    static func email(_ reader: SettingsReader) throws -> EmailSettings {
        guard let text = reader.raw("SMTP_URL", flag: nil) else {
            throw SettingsError(message: "SMTP_URL is required for email: smtp://user:password@smtp.example.com:587 (STARTTLS) or smtps://…:465 (TLS)")
        }
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), ["smtp", "smtps"].contains(scheme),
              let host = url.host, !host.isEmpty else {
            throw SettingsError(message: "SMTP_URL must look like smtp://user:password@smtp.example.com:587 (or smtps:// for TLS from the start)")
        }
        let security: SMTPConfiguration.Security
        if let value = reader.raw("SMTP_TLS", flag: nil) {
            guard let parsed = SMTPConfiguration.Security(rawValue: value.lowercased()) else {
                throw SettingsError(message: "SMTP_TLS='\(value)' must be starttls, tls or none")
            }
            security = parsed
        } else {
            security = scheme == "smtps" ? .tls : .starttls
        }
        let username = url.percentEncodedUser?.removingPercentEncoding
        let password = url.percentEncodedPassword?.removingPercentEncoding
        guard (username == nil) == (password == nil) else {
            throw SettingsError(message: "SMTP_URL: give both a user and a password (percent-encode special characters), or neither")
        }
        if username != nil && security == .none {
            throw SettingsError(message: "SMTP_URL has credentials but SMTP_TLS=none would send them in the clear; use starttls or tls")
        }
        let caFile = reader.raw("SMTP_CA_FILE", flag: nil)
        if let caFile, !FileManager.default.isReadableFile(atPath: caFile) {
            throw SettingsError(message: "SMTP_CA_FILE: \(caFile) cannot be read")
        }
        let configuration = SMTPConfiguration(
            host: host, port: url.port, security: security, username: username, password: password,
            heloName: reader.string("SMTP_HELO_NAME", default: ProcessInfo.processInfo.hostName.isEmpty ? "localhost" : ProcessInfo.processInfo.hostName),
            timeout: try reader.duration("SMTP_TIMEOUT", default: .seconds(30))!, trustRootsFile: caFile)
        let client: SMTPClient
        do {
            client = try SMTPClient(configuration)
        } catch {
            throw SettingsError(message: "SMTP_CA_FILE: \(error)")
        }
        guard let fromText = reader.raw("SMTP_FROM", flag: nil) else {
            throw SettingsError(message: "SMTP_FROM is required for email: the sender, such as \"Notify <notify@example.com>\"")
        }
        guard let from = Mailbox(fromText) else {
            throw SettingsError(message: "SMTP_FROM='\(fromText)' must be an address, or a name and an address: Notify <notify@example.com>")
        }
        return EmailSettings(client: client, from: from, unsubscribe: try unsubscribeLinks(reader))
    }

    /// The links of `List-Unsubscribe`: the gateway's `PUBLIC_URL` and the
    /// secret it checks them with.
    static func unsubscribeLinks(_ reader: SettingsReader) throws -> UnsubscribeLinks {
        let port = try reader.integer("PORT", default: 8080, range: 0...65_535)
        let base = reader.string("PUBLIC_URL", default: "http://localhost:\(port)")
        guard let url = URLComponents(string: base), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
            throw SettingsError(message: "PUBLIC_URL='\(base)' must be the gateway's public http(s) address, such as https://notify.example.com (unsubscribe links start with it)")
        }
        guard let secret = reader.raw("UNSUBSCRIBE_SECRET", flag: nil) ?? reader.raw("JWT_SECRET", flag: nil) else {
            throw SettingsError(message: "email needs UNSUBSCRIBE_SECRET (or JWT_SECRET) to sign unsubscribe links; give the gateway the same value")
        }
        guard secret.utf8.count >= 32 else {
            throw SettingsError(message: "UNSUBSCRIBE_SECRET (or JWT_SECRET) is \(secret.utf8.count) bytes; unsubscribe links need at least 32")
        }
        return UnsubscribeLinks(baseURL: base, secret: secret)
    }

    /// `VAPID_PRIVATE_KEY`, `VAPID_SUBJECT`, `WEBPUSH_TTL`, `WEBPUSH_TIMEOUT`.
    static func webPush(_ reader: SettingsReader) throws -> WebPushSettings {
        guard let keyText = reader.raw("VAPID_PRIVATE_KEY", flag: nil) else {
            throw SettingsError(message: "VAPID_PRIVATE_KEY is required for Web Push; `notify webpush-keys` makes a key pair")
        }
        let key: VAPIDKey
        do {
            key = try VAPIDKey(base64URL: keyText)
        } catch {
            throw SettingsError(message: error.description)
        }
        guard let subject = reader.raw("VAPID_SUBJECT", flag: nil), subject.hasPrefix("mailto:") || subject.hasPrefix("https:") else {
            throw SettingsError(message: "VAPID_SUBJECT is required for Web Push: a contact for push services, mailto:ops@example.com or https://example.com")
        }
        let ttl = try reader.duration("WEBPUSH_TTL", default: .seconds(86_400), allowZero: true)!
        guard ttl <= .seconds(28 * 86_400) else {
            throw SettingsError(message: "WEBPUSH_TTL may be at most 28 days (push services keep messages no longer)")
        }
        return WebPushSettings(key: key, subject: subject, timeToLive: ttl, timeout: try reader.duration("WEBPUSH_TIMEOUT", default: .seconds(10))!)
    }

    /// Where the worker announces new notifications; `nil` with no channel on.
    var dispatchSubject: String? { channels.isEmpty ? nil : configuration.dispatchSubject }

    /// One sender per channel that is on.
    func senders(repository: NotificationRepository, logger: Logger) -> [any ChannelSender] {
        channels.sorted().compactMap { channel -> (any ChannelSender)? in
            switch channel {
            case .webhook:
                WebhookSender(timeout: webhookTimeout)
            case .email:
                email.map { EmailSender(client: $0.client, from: $0.from, templates: templates, unsubscribe: $0.unsubscribe) }
            case .webpush:
                webPush.map {
                    WebPushSender(
                        key: $0.key, subject: $0.subject, templates: templates, repository: repository,
                        timeToLive: $0.timeToLive, timeout: $0.timeout, logger: logger)
                }
            }
        }
    }
}
