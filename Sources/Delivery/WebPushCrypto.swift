public import Crypto
import Foundation
import JSON
import Notifications

/// Why a push message could not be built: a subscription's keys or the
/// VAPID key are not what the standards say.
public struct WebPushError: Error, CustomStringConvertible, Sendable {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Message encryption for Web Push (RFC 8291), in the `aes128gcm` content
/// coding of RFC 8188: one record, the sender's ephemeral public key as
/// the key id.
public enum WebPushEncryption {
    /// The record size written in the header; a push service accepts at
    /// least 4,096 bytes of body (RFC 8030 §7.2).
    public static let recordSize = 4_096
    /// Header: salt (16) | rs (4) | idlen (1) | keyid (65).
    static let headerSize = 16 + 4 + 1 + 65
    /// The longest plaintext that fits one 4,096-byte body: less the
    /// header, the 16-byte tag and the padding delimiter.
    public static let maxPlaintext = recordSize - headerSize - 16 - 1

    /// The body of a push message carrying `plaintext` to the browser
    /// whose subscription has `p256dh` (65-byte uncompressed P-256) and
    /// `auth` (16 bytes).
    ///
    /// - Parameters:
    ///   - senderKey: the ephemeral key; a new one per message except in
    ///     tests against the RFC's example.
    ///   - salt: 16 random bytes, likewise.
    public static func encrypt(
        _ plaintext: [UInt8], p256dh: [UInt8], auth: [UInt8],
        senderKey: P256.KeyAgreement.PrivateKey = .init(), salt: [UInt8]? = nil
    ) throws(WebPushError) -> [UInt8] {
        guard plaintext.count <= maxPlaintext else {
            throw WebPushError("the payload is \(plaintext.count) bytes; Web Push carries at most \(maxPlaintext)")
        }
        guard auth.count == 16 else { throw WebPushError("the subscription's auth secret is \(auth.count) bytes, not 16") }
        let userAgentKey: P256.KeyAgreement.PublicKey
        do {
            userAgentKey = try P256.KeyAgreement.PublicKey(x963Representation: p256dh)
        } catch {
            throw WebPushError("the subscription's p256dh is not an uncompressed P-256 point")
        }
        let salt = salt ?? (0..<16).map { _ in UInt8.random(in: .min ... .max) }
        guard salt.count == 16 else { throw WebPushError("the salt is \(salt.count) bytes, not 16") }
        let sharedSecret: SharedSecret
        do {
            sharedSecret = try senderKey.sharedSecretFromKeyAgreement(with: userAgentKey)
        } catch {
            throw WebPushError("key agreement with the subscription's p256dh failed: \(error)")
        }
        let senderPublic = Array(senderKey.publicKey.x963Representation)

        // RFC 8291 §3.4: the input keying material binds both public keys
        // and the subscription's auth secret.
        var keyInfo = Array("WebPush: info".utf8) + [0]
        keyInfo += p256dh
        keyInfo += senderPublic
        let inputKeyingMaterial = sharedSecret.hkdfDerivedSymmetricKey(
            using: SHA256.self, salt: auth, sharedInfo: keyInfo, outputByteCount: 32)
        // RFC 8188 §2.2: the content-encryption key and nonce from the salt.
        let contentKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: inputKeyingMaterial, salt: salt,
            info: Array("Content-Encoding: aes128gcm".utf8) + [0], outputByteCount: 16)
        let nonceBytes = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: inputKeyingMaterial, salt: salt,
            info: Array("Content-Encoding: nonce".utf8) + [0], outputByteCount: 12)
            .withUnsafeBytes { Array($0) }

        // One record, so it is also the last: the delimiter is 0x02.
        let padded = plaintext + [2]
        let sealed: AES.GCM.SealedBox
        do {
            sealed = try AES.GCM.seal(padded, using: contentKey, nonce: try AES.GCM.Nonce(data: nonceBytes))
        } catch {
            throw WebPushError("AES-GCM failed: \(error)")
        }
        var body = salt
        body.reserveCapacity(headerSize + padded.count + 16)
        withUnsafeBytes(of: UInt32(recordSize).bigEndian) { body += $0 }
        body.append(UInt8(senderPublic.count))
        body += senderPublic
        body += sealed.ciphertext
        body += sealed.tag
        return body
    }
}

/// The application server's key for Voluntary Application Server
/// Identification (RFC 8292): browsers subscribe with its public half,
/// and each push request carries a JWT signed with its private half.
public struct VAPIDKey: Sendable {
    let privateKey: P256.Signing.PrivateKey
    /// The public key as browsers want it for `applicationServerKey`:
    /// base64url of the 65-byte uncompressed point.
    public let publicKey: String

    /// A key from `VAPID_PRIVATE_KEY`: base64url of the 32-byte private
    /// scalar (the form `notify webpush-keys` and the web-push libraries
    /// print).
    public init(base64URL: String) throws(WebPushError) {
        guard let raw = Base64URL.decode(base64URL.trimmingCharacters(in: .whitespacesAndNewlines)), raw.count == 32 else {
            throw WebPushError("VAPID_PRIVATE_KEY must be the base64url of a 32-byte P-256 private key (`notify webpush-keys` makes one)")
        }
        do {
            self.init(try P256.Signing.PrivateKey(rawRepresentation: raw))
        } catch {
            throw WebPushError("VAPID_PRIVATE_KEY is not a valid P-256 private key (`notify webpush-keys` makes one)")
        }
    }

    init(_ privateKey: P256.Signing.PrivateKey) {
        self.privateKey = privateKey
        self.publicKey = Base64URL.encode(privateKey.publicKey.x963Representation)
    }

    /// A new key.
    public static func generate() -> VAPIDKey {
        VAPIDKey(P256.Signing.PrivateKey())
    }

    /// The private key, to put in `VAPID_PRIVATE_KEY`.
    public var privateKeyBase64URL: String {
        Base64URL.encode(privateKey.rawRepresentation)
    }

    /// `vapid t=<JWT>, k=<public key>` for a push to `audience` (the
    /// endpoint's origin), valid until `expiry` (at most 24 hours ahead).
    public func authorization(audience: String, subject: String, expiry: Int64) throws(WebPushError) -> String {
        let header = Base64URL.encode(Array(#"{"typ":"JWT","alg":"ES256"}"#.utf8))
        var claims = JSONWriter()
        claims.raw("{\"aud\":")
        claims.string(audience)
        claims.raw(",\"exp\":")
        claims.integer(expiry)
        claims.raw(",\"sub\":")
        claims.string(subject)
        claims.raw("}")
        let signingInput = header + "." + Base64URL.encode(claims.bytes)
        let signature: P256.Signing.ECDSASignature
        do {
            signature = try privateKey.signature(for: Array(signingInput.utf8))
        } catch {
            throw WebPushError("signing the VAPID token failed: \(error)")
        }
        // JWS ES256 is the raw r || s, not DER.
        return "vapid t=\(signingInput).\(Base64URL.encode(signature.rawRepresentation)), k=\(publicKey)"
    }
}
