import Crypto
import Foundation
import JSON
import Notifications

/// Why a token was refused. The raw value is the label of
/// `notify_auth_failures_total{reason}`; the token itself is never logged.
public enum TokenFailure: String, Error, Sendable, CaseIterable {
    case missing
    case tooLarge = "too_large"
    case malformed
    case unsupportedAlgorithm = "unsupported_algorithm"
    case badSignature = "bad_signature"
    case missingExpiry = "missing_expiry"
    case expired
    case notYetValid = "not_yet_valid"
    case invalidSubject = "invalid_subject"
    case wrongIssuer = "wrong_issuer"
    case wrongAudience = "wrong_audience"

    /// A message for the client's 401 body.
    public var message: String {
        switch self {
        case .missing: "a bearer token is required (Authorization: Bearer <jwt>, or ?access_token=)"
        case .tooLarge: "the token is too large"
        case .malformed: "the token is not a well-formed JWT"
        case .unsupportedAlgorithm: "only HS256 tokens are accepted"
        case .badSignature: "the token's signature is not valid"
        case .missingExpiry: "the token has no exp claim"
        case .expired: "the token has expired"
        case .notYetValid: "the token is not valid yet (nbf)"
        case .invalidSubject: "the token's sub (or userId) is not a valid user id"
        case .wrongIssuer: "the token's issuer is not accepted"
        case .wrongAudience: "the token's audience is not accepted"
        }
    }
}

/// A verified token: whose it is and until when it is valid.
public struct VerifiedToken: Sendable, Hashable {
    /// The user id (`sub`, else `userId`), checked like an event's `owner`.
    public let user: String
    /// `exp`, Unix seconds.
    public let expiresAt: Int64
}

/// Verifies HS256 JSON Web Tokens (RFC 7519) signed with `JWT_SECRET`.
///
/// Only `alg: HS256` is accepted (no `none`, no other algorithm, no `crit`
/// extensions); the signature is compared in constant time; `exp` is
/// required and `exp`/`nbf` are checked with a leeway of at most 60 s; the
/// user id must be 1–128 characters of `[A-Za-z0-9_-]`, since it becomes a
/// NATS subject token.
public struct TokenVerifier: Sendable {
    /// Largest accepted token, in bytes.
    public static let maxTokenBytes = 8_192
    /// Shortest accepted secret: HS256 wants a key of at least its output size.
    public static let minimumSecretBytes = 32

    private let key: SymmetricKey
    public let issuer: String?
    public let audience: String?
    public let leeway: Int64

    public init(secret: String, issuer: String? = nil, audience: String? = nil, leeway: Duration = .seconds(60)) {
        key = SymmetricKey(data: Array(secret.utf8))
        self.issuer = issuer
        self.audience = audience
        self.leeway = min(max(leeway.components.seconds, 0), 60)
    }

    /// The token's user, or why it is refused; `now` is Unix seconds.
    public func verify(_ token: String, now: Int64) -> Result<VerifiedToken, TokenFailure> {
        do throws(TokenFailure) {
            return .success(try check(token, now: now))
        } catch {
            return .failure(error)
        }
    }

    private func check(_ token: String, now: Int64) throws(TokenFailure) -> VerifiedToken {
        let bytes = Array(token.utf8)
        if bytes.isEmpty { throw .missing }
        if bytes.count > Self.maxTokenBytes { throw .tooLarge }
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty,
              let headerBytes = Self.base64URLDecode(parts[0]),
              let payloadBytes = Self.base64URLDecode(parts[1]),
              let signature = Self.base64URLDecode(parts[2]),
              case .object(let header)? = try? JSONParser.parse(headerBytes),
              case .object(let claims)? = try? JSONParser.parse(payloadBytes)
        else { throw .malformed }
        guard case .string("HS256")? = header["alg"], header["crit"] == nil else { throw .unsupportedAlgorithm }
        let signingInput = Array(bytes[0..<(parts[0].count + 1 + parts[1].count)])
        guard signature.count == SHA256.byteCount,
              HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key)
        else { throw .badSignature }

        guard let expiry = claims["exp"] else { throw .missingExpiry }
        guard let expiresAt = Self.numericDate(expiry) else { throw .malformed }
        if now > expiresAt + leeway { throw .expired }
        if let notBefore = claims["nbf"] {
            guard let start = Self.numericDate(notBefore) else { throw .malformed }
            if now + leeway < start { throw .notYetValid }
        }
        let user: String
        switch (claims["sub"], claims["userId"]) {
        case (.string(let subject)?, _): user = subject
        case (nil, .string(let id)?), (.null?, .string(let id)?): user = id
        default: throw .invalidSubject
        }
        guard EventValidator.isValidUserID(user) else { throw .invalidSubject }
        if let issuer {
            guard case .string(let claimed)? = claims["iss"], claimed == issuer else { throw .wrongIssuer }
        }
        if let audience {
            switch claims["aud"] {
            case .string(let claimed)? where claimed == audience: break
            case .array(let list)? where list.contains(.string(audience)): break
            default: throw .wrongAudience
            }
        }
        return VerifiedToken(user: user, expiresAt: expiresAt)
    }

    /// A JWT NumericDate: integer seconds (fractions are not accepted by
    /// our reader and are rare in practice).
    private static func numericDate(_ value: JSONValue) -> Int64? {
        if case .integer(let seconds) = value { return seconds }
        return nil
    }

    /// Unpadded base64url (RFC 7515 §2); `nil` for anything else.
    static func base64URLDecode(_ input: ArraySlice<UInt8>) -> [UInt8]? {
        Base64URL.decode(input)
    }

    /// Unpadded base64url of `bytes`.
    public static func base64URLEncode(_ bytes: some Sequence<UInt8>) -> String {
        Base64URL.encode(bytes)
    }

    /// Signs an HS256 token for `user` valid until `expiresAt` (Unix
    /// seconds). For the development token endpoint and for tests.
    public func sign(user: String, expiresAt: Int64) -> String {
        var claims = JSONWriter()
        claims.raw("{\"sub\":")
        claims.string(user)
        claims.raw(",\"exp\":")
        claims.integer(expiresAt)
        if let issuer { claims.raw(",\"iss\":"); claims.string(issuer) }
        if let audience { claims.raw(",\"aud\":"); claims.string(audience) }
        claims.raw("}")
        let signingInput = Self.base64URLEncode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8)) + "." + Self.base64URLEncode(claims.bytes)
        let signature = HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: key)
        return signingInput + "." + Self.base64URLEncode(signature)
    }
}
