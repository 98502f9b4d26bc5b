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
        let appURL = reader.string("APP_URL", default: "http://localhost:8080")
        guard let url = URLComponents(string: appURL), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
            throw SettingsError(message: "APP_URL='\(appURL)' must be the web app's http(s) address, such as https://app.example.com (links in emails and pushes start with it)")
        }
        let directory = reader.raw("TEMPLATES_DIR", flag: flags.templatesDirectory)
        do {
            templates = try NotificationTemplates(directory: directory, appURL: appURL.hasSuffix("/") ? String(appURL.dropLast()) : appURL)
        } catch {
            throw SettingsError(message: error.message.hasPrefix("TEMPLATES_DIR") ? error.message : "TEMPLATES_DIR: " + error.message)
        }
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
    }

    /// Channels this build can send on.
    static let available: Set<DeliveryChannel> = [.webhook]

    /// Where the worker announces new notifications; `nil` with no channel on.
    var dispatchSubject: String? { channels.isEmpty ? nil : configuration.dispatchSubject }

    /// One sender per channel that is on.
    func senders() -> [any ChannelSender] {
        channels.sorted().compactMap { channel -> (any ChannelSender)? in
            switch channel {
            case .webhook: WebhookSender(timeout: webhookTimeout)
            case .email, .webpush: nil
            }
        }
    }
}
