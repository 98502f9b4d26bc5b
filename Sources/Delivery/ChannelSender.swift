public import Notifications

/// One try at delivering a notification through one channel.
public struct DeliveryRequest: Sendable {
    /// The notification as stored now (its title and body rendered).
    public let record: NotificationRecord
    /// Where its owner can be reached.
    public let addresses: DeliveryAddresses
    /// `<notification id>.<channel>`: the same on every try, so a receiver
    /// can recognise a repeat.
    public let jobID: String
    /// 1 on the first try.
    public let attempt: Int
}

/// How a try went.
public enum DeliveryOutcome: Sendable, Hashable {
    /// The channel's server accepted it.
    case sent
    /// A failure that may pass (a timeout, a 5xx, a 4xx SMTP reply):
    /// try again, after `retryAfter` when the server said so.
    case transient(reason: String, retryAfter: Duration? = nil)
    /// A failure that will not pass (a rejected address, a 4xx HTTP
    /// reply, a gone subscription): dead-letter it.
    case permanent(reason: String)

    /// A short label for metrics: `timeout`, `http_503`, `smtp_550`, ….
    public var reasonLabel: String {
        switch self {
        case .sent: "none"
        case .transient(let reason, _), .permanent(let reason): Self.label(reason)
        }
    }

    /// The first word of a reason, which senders keep short and fixed
    /// (`http_503: …`, `timeout: …`).
    static func label(_ reason: String) -> String {
        String(reason.prefix { $0 != ":" && $0 != " " }.prefix(32))
    }
}

/// Delivers notifications through one channel. Implementations render
/// what they send from ``DeliveryRequest/record`` and classify every
/// failure as transient or permanent; they never throw.
///
/// SMS or WhatsApp plug in here: a sender that calls the vendor's API
/// (Twilio's `POST /2010-04-01/Accounts/<sid>/Messages.json`, say) and
/// maps its replies to ``DeliveryOutcome``.
public protocol ChannelSender: Sendable {
    var channel: DeliveryChannel { get }
    func send(_ request: DeliveryRequest) async -> DeliveryOutcome
}
