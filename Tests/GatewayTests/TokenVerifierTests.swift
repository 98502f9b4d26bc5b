import Crypto
import Foundation
@testable import Gateway
import Testing

@Suite("HS256 token verification")
struct TokenVerifierTests {
    static let secret = "a-development-secret-of-32-bytes!"
    static let verifier = TokenVerifier(secret: secret)
    static let now: Int64 = 1_765_318_000

    /// A token with any header and claims, signed with HMAC-SHA256 (or
    /// SHA-512, or unsigned) over the exact bytes given.
    static func token(header: String = #"{"alg":"HS256","typ":"JWT"}"#, claims: String, secret: String = secret, algorithm: String = "HS256") -> String {
        let input = TokenVerifier.base64URLEncode(Array(header.utf8)) + "." + TokenVerifier.base64URLEncode(Array(claims.utf8))
        let key = SymmetricKey(data: Array(secret.utf8))
        let signature: [UInt8]
        switch algorithm {
        case "HS512": signature = Array(HMAC<SHA512>.authenticationCode(for: Array(input.utf8), using: key))
        case "none": return input + "."
        default: signature = Array(HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: key))
        }
        return input + "." + TokenVerifier.base64URLEncode(signature)
    }

    static func failure(_ token: String, verifier: TokenVerifier = verifier) -> TokenFailure? {
        if case .failure(let failure) = verifier.verify(token, now: now) { return failure }
        return nil
    }

    @Test func aValidTokenNamesItsUser() throws {
        let token = Self.token(claims: #"{"sub":"user-123","exp":\#(Self.now + 600)}"#)
        let verified = try Self.verifier.verify(token, now: Self.now).get()
        #expect(verified == VerifiedToken(user: "user-123", expiresAt: Self.now + 600))
        let signed = Self.verifier.sign(user: "ana", expiresAt: Self.now + 60)
        #expect(try Self.verifier.verify(signed, now: Self.now).get().user == "ana")
    }

    @Test func userIdIsAcceptedWhenSubIsAbsent() throws {
        let token = Self.token(claims: #"{"userId":"u_9","exp":\#(Self.now + 600)}"#)
        #expect(try Self.verifier.verify(token, now: Self.now).get().user == "u_9")
    }

    @Test func otherAlgorithmsAreRefused() {
        let claims = #"{"sub":"ana","exp":\#(Self.now + 600)}"#
        #expect(Self.failure(Self.token(header: #"{"alg":"none","typ":"JWT"}"#, claims: claims, algorithm: "none")) == .unsupportedAlgorithm)
        #expect(Self.failure(Self.token(header: #"{"alg":"HS512","typ":"JWT"}"#, claims: claims, algorithm: "HS512")) == .unsupportedAlgorithm)
        #expect(Self.failure(Self.token(header: #"{"alg":"RS256"}"#, claims: claims)) == .unsupportedAlgorithm)
        #expect(Self.failure(Self.token(header: #"{"alg":"hs256"}"#, claims: claims)) == .unsupportedAlgorithm)
        #expect(Self.failure(Self.token(header: #"{"typ":"JWT"}"#, claims: claims)) == .unsupportedAlgorithm)
        #expect(Self.failure(Self.token(header: #"{"alg":"HS256","crit":["exp"]}"#, claims: claims)) == .unsupportedAlgorithm)
        // An HS256 header over an HS512 signature is just a bad signature.
        #expect(Self.failure(Self.token(claims: claims, algorithm: "HS512")) == .badSignature)
    }

    @Test func aWrongSecretOrATamperedTokenHasABadSignature() {
        let claims = #"{"sub":"ana","exp":\#(Self.now + 600)}"#
        #expect(Self.failure(Self.token(claims: claims, secret: "another-secret-of-at-least-32-bytes")) == .badSignature)
        let good = Self.token(claims: claims)
        let parts = good.split(separator: ".").map(String.init)
        let forged = TokenVerifier.base64URLEncode(Array(#"{"sub":"eve","exp":\#(Self.now + 600)}"#.utf8))
        #expect(Self.failure(parts[0] + "." + forged + "." + parts[2]) == .badSignature)
        var flipped = Array(parts[2].utf8)
        flipped[3] = flipped[3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(Self.failure(parts[0] + "." + parts[1] + "." + String(decoding: flipped, as: UTF8.self)) == .badSignature)
    }

    @Test func expiryIsRequiredAndCheckedWithAtMostAMinuteOfLeeway() {
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana"}"#)) == .missingExpiry)
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana","exp":"tomorrow"}"#)) == .malformed)
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana","exp":\#(Self.now - 30)}"#)) == nil, "within the leeway")
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana","exp":\#(Self.now - 61)}"#)) == .expired)
        let strict = TokenVerifier(secret: Self.secret, leeway: .seconds(3_600))
        #expect(strict.leeway == 60, "leeway is capped at 60 s")
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana","exp":\#(Self.now - 120)}"#), verifier: strict) == .expired)
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana","exp":\#(Self.now + 600),"nbf":\#(Self.now + 300)}"#)) == .notYetValid)
    }

    @Test(arguments: [">", "*", "a.b", "a b", "$SYS", "", "ünï", String(repeating: "x", count: 129)])
    func aUserIDThatCannotBeASubjectTokenIsRefused(user: String) {
        var writer = [UInt8]()
        writer += Array(#"{"sub":"#.utf8)
        let encoded = (try? JSONSerialization.data(withJSONObject: [user], options: [])).map { String(decoding: $0.dropFirst().dropLast(), as: UTF8.self) } ?? "\"\""
        writer += Array(encoded.utf8)
        writer += Array(#","exp":\#(Self.now + 600)}"#.utf8)
        #expect(Self.failure(Self.token(claims: String(decoding: writer, as: UTF8.self))) == .invalidSubject)
        #expect(Self.failure(Self.token(claims: #"{"sub":42,"exp":\#(Self.now + 600)}"#)) == .invalidSubject)
        #expect(Self.failure(Self.token(claims: #"{"exp":\#(Self.now + 600)}"#)) == .invalidSubject)
    }

    @Test func malformedTokensAreRefused() {
        #expect(Self.failure("") == .missing)
        #expect(Self.failure("e30.e30.") == .unsupportedAlgorithm, "header {} has no alg")
        for token in ["abc", "a.b", "a.b.c.d", "..", "!!!.e30.sig", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln", "e30=.e30=.c2ln"] {
            #expect(Self.failure(token) == .malformed, "\(token)")
        }
        let huge = Self.token(claims: #"{"sub":"ana","exp":\#(Self.now + 600),"pad":"\#(String(repeating: "x", count: 16_384))"}"#)
        #expect(Self.failure(huge) == .tooLarge)
    }

    @Test func issuerAndAudienceAreCheckedWhenConfigured() {
        let verifier = TokenVerifier(secret: Self.secret, issuer: "main-api", audience: "notify")
        let good = #"{"sub":"ana","exp":\#(Self.now + 600),"iss":"main-api","aud":"notify"}"#
        #expect(Self.failure(Self.token(claims: good), verifier: verifier) == nil)
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana","exp":\#(Self.now + 600),"iss":"main-api","aud":["x","notify"]}"#), verifier: verifier) == nil)
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana","exp":\#(Self.now + 600),"iss":"other","aud":"notify"}"#), verifier: verifier) == .wrongIssuer)
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana","exp":\#(Self.now + 600),"aud":"notify"}"#), verifier: verifier) == .wrongIssuer)
        #expect(Self.failure(Self.token(claims: #"{"sub":"ana","exp":\#(Self.now + 600),"iss":"main-api","aud":"web"}"#), verifier: verifier) == .wrongAudience)
    }

    @Test func base64URLRoundTrips() {
        for length in 0..<40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let encoded = TokenVerifier.base64URLEncode(bytes)
            #expect(!encoded.contains("=") && !encoded.contains("+") && !encoded.contains("/"))
            #expect(TokenVerifier.base64URLDecode(ArraySlice(encoded.utf8)) == bytes)
        }
    }
}

@Suite("Where the token is read from")
struct BearerTokenTests {
    @Test func theAuthorizationHeaderWinsAndIsTrimmedOfSpacesAndTabs() {
        #expect(bearerToken(authorization: "Bearer \t abc.def.ghi \t", query: "access_token=other") == "abc.def.ghi")
        #expect(bearerToken(authorization: "bEaReR abc", query: nil) == "abc")
        #expect(bearerToken(authorization: "Bearer    ", query: nil) == "")
    }

    @Test func otherSchemesFallBackToTheQuery() {
        #expect(bearerToken(authorization: "Basic abc", query: "x=1&access_token=q.r.s") == "q.r.s")
        #expect(bearerToken(authorization: nil, query: "x=1") == nil)
        #expect(bearerToken(authorization: nil, query: nil) == nil)
    }

    @Test func theQueryValueIsPercentDecodedWhenItDecodesToUTF8() {
        #expect(bearerToken(authorization: nil, query: "access_token=a%2Eb%2ec") == "a.b.c")
        #expect(bearerToken(authorization: nil, query: "access_token=a%C3%A9") == "aé")
        // Malformed or not UTF-8: taken as it is (and then refused by the verifier).
        #expect(bearerToken(authorization: nil, query: "access_token=a%2") == "a%2")
        #expect(bearerToken(authorization: nil, query: "access_token=a%FF") == "a%FF")
        #expect(bearerToken(authorization: nil, query: "access_token=") == "")
    }

    @Test func aSixteenKiBTokenComesBackWhole() {
        let token = String(repeating: "x", count: 16_384)
        #expect(bearerToken(authorization: "Bearer " + token, query: nil) == token)
        #expect(bearerToken(authorization: nil, query: "access_token=" + token) == token)
    }
}
