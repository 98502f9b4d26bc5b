import Crypto
import Foundation

/// Signed links that turn one channel off for one user without a login:
/// the `List-Unsubscribe` of every email. The dispatcher makes them and
/// the gateway checks them, both from the same secret
/// (`UNSUBSCRIBE_SECRET`, else `JWT_SECRET`).
///
/// A link is `<base>/v1/unsubscribe?user=<owner>&channel=<channel>&token=<t>`
/// where `t` is the base64url HMAC-SHA256 of `unsubscribe:<channel>:<owner>`
/// under a key derived from the secret. It does not expire: an old email's
/// link must still work.
public struct UnsubscribeLinks: Sendable {
    /// The gateway's public address, without a trailing `/`.
    public let baseURL: String
    private let key: SymmetricKey

    public init(baseURL: String, secret: String) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        // A key of its own, so a link never doubles as anything signed
        // with the secret itself (such as a token).
        let derived = HMAC<SHA256>.authenticationCode(for: Array("notify unsubscribe links v1".utf8), using: SymmetricKey(data: Array(secret.utf8)))
        key = SymmetricKey(data: Array(derived))
    }

    /// The link that turns `channel` off for `owner`.
    public func url(owner: String, channel: DeliveryChannel) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let user = owner.addingPercentEncoding(withAllowedCharacters: allowed) ?? owner
        return "\(baseURL)/v1/unsubscribe?user=\(user)&channel=\(channel.rawValue)&token=\(token(owner: owner, channel: channel))"
    }

    func token(owner: String, channel: DeliveryChannel) -> String {
        Base64URL.encode(HMAC<SHA256>.authenticationCode(for: Self.message(owner, channel), using: key))
    }

    /// Whether `token` is the one for `owner` and `channel` (compared in
    /// constant time).
    public func verify(owner: String, channel: DeliveryChannel, token: String) -> Bool {
        guard let mac = Base64URL.decode(token), mac.count == 32 else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Self.message(owner, channel), using: key)
    }

    private static func message(_ owner: String, _ channel: DeliveryChannel) -> [UInt8] {
        Array("unsubscribe:\(channel.rawValue):\(owner)".utf8)
    }
}
