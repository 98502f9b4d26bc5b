import Crypto
import Foundation

/// JSON Web Tokens for the gateway, signed here as the main API would:
/// good ones, and every kind of bad one the contract says must get `401`.
enum Tokens {
    /// An HS256 token for `user`, valid for an hour.
    static func valid(user: String, secret: String = Harness.secret) -> String {
        signed(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: #"{"sub":"\#(user)","exp":\#(Int(Date().timeIntervalSince1970) + 3_600)}"#, secret: secret)
    }

    /// Named bad tokens for `user`.
    static func bad(user: String, secret: String = Harness.secret) -> [(name: String, token: String)] {
        let now = Int(Date().timeIntervalSince1970)
        let claims = #"{"sub":"\#(user)","exp":\#(now + 3_600)}"#
        let good = valid(user: user, secret: secret)
        let goodParts = good.split(separator: ".")
        return [
            ("alg none", signed(header: #"{"alg":"none","typ":"JWT"}"#, claims: claims, secret: nil)),
            ("HS512", signed(header: #"{"alg":"HS512","typ":"JWT"}"#, claims: claims, secret: secret, sha512: true)),
            ("bad signature", signed(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: claims, secret: secret + "-not-the-secret")),
            ("expired", signed(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: #"{"sub":"\#(user)","exp":\#(now - 3_600)}"#, secret: secret)),
            ("no exp", signed(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: #"{"sub":"\#(user)"}"#, secret: secret)),
            ("16 KiB", signed(header: #"{"alg":"HS256","typ":"JWT"}"#,
                              claims: #"{"sub":"\#(user)","exp":\#(now + 3_600),"pad":"\#(String(repeating: "x", count: 16_384))"}"#, secret: secret)),
            ("bad base64", "\(goodParts[0]).!!!*not~base64*!!!.\(goodParts[2])"),
        ]
    }

    /// An HS256 token with exactly these claims (JSON text).
    static func signed(claims: String, secret: String = Harness.secret) -> String {
        signed(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: claims, secret: secret)
    }

    private static func signed(header: String, claims: String, secret: String?, sha512: Bool = false) -> String {
        let input = base64URL(Array(header.utf8)) + "." + base64URL(Array(claims.utf8))
        guard let secret else { return input + "." }
        let key = SymmetricKey(data: Data(secret.utf8))
        let signature = sha512
            ? Array(HMAC<SHA512>.authenticationCode(for: Data(input.utf8), using: key))
            : Array(HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: key))
        return input + "." + base64URL(signature)
    }

    /// Base64url without padding (RFC 7515).
    private static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
