import Foundation
public import Notifications
public import Templates

/// Delivers notifications by email through an SMTP server: a plain-text
/// part and the HTML layout from the `email` templates, a subject from the
/// title, and a one-click unsubscribe link (RFC 8058) that turns email off
/// for the recipient.
///
/// The server's 4xx replies, timeouts and lost connections are retried;
/// its 5xx replies (a rejected recipient, failed authentication) are
/// permanent.
public struct EmailSender: ChannelSender {
    public let channel = DeliveryChannel.email
    let client: SMTPClient
    let from: Mailbox
    let templates: NotificationTemplates
    let unsubscribe: UnsubscribeLinks

    public init(client: SMTPClient, from: Mailbox, templates: NotificationTemplates, unsubscribe: UnsubscribeLinks) {
        self.client = client
        self.from = from
        self.templates = templates
        self.unsubscribe = unsubscribe
    }

    public func send(_ request: DeliveryRequest) async -> DeliveryOutcome {
        guard let recipient = request.addresses.email else { return .permanent(reason: "no_address: the user has no email address") }
        guard DeliveryAddresses.isEmailAddress(recipient) else { return .permanent(reason: "bad_address: '\(recipient.prefix(80))' is not an email address") }
        guard let message = message(for: request.record, to: recipient) else {
            return .permanent(reason: "no_template: no email template for this kind of notification")
        }
        do {
            try await client.send(message.rendered(), from: from.address, to: recipient)
            return .sent
        } catch {
            let reason = (error.replyCode.map { "smtp_\($0): " } ?? "") + error.description
            return error.isTransient ? .transient(reason: reason) : .permanent(reason: reason)
        }
    }

    /// The email for `record`; `nil` for a kind without templates.
    func message(for record: NotificationRecord, to recipient: String, date: Date = Date()) -> EmailMessage? {
        let link = unsubscribe.url(owner: record.owner, channel: .email)
        guard let rendered = templates.render(record, channel: .email, unsubscribeURL: link) else { return nil }
        let domain = from.address.split(separator: "@").last.map(String.init) ?? "localhost"
        let text = """
            \(rendered.body)

            \(rendered.actionURL)

            --
            You get these emails because email notifications are on. Unsubscribe: \(link)
            """
        return EmailMessage(
            from: from, to: recipient, subject: rendered.title, text: text, html: rendered.html,
            messageID: "\(record.id)@\(domain)", date: date, unsubscribeURL: link)
    }
}
