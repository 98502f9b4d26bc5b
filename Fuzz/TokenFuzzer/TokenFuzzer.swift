// The JWT parser and verifier under libFuzzer (`make fuzz`): any bytes must
// be refused with a reason or verified, never crash; only a token signed
// with the secret may verify, and its user must pass the owner id rule.
// Built without FUZZING, the same checks replay a corpus.
import FuzzSupport
import Gateway
import Notifications

/// The corpus's signed seeds use this secret.
private let verifier = TokenVerifier(secret: "fuzz-secret-of-at-least-32-bytes!!")
private let now: Int64 = 1_765_318_000

func check(_ input: UnsafeRawBufferPointer) {
    let token = String(decoding: input, as: UTF8.self)
    switch verifier.verify(token, now: now) {
    case .success(let verified):
        precondition(EventValidator.isValidUserID(verified.user), "verified a token for an invalid user id")
        precondition(verified.expiresAt + 60 >= now, "verified an expired token")
    case .failure:
        break
    }
}

/// libFuzzer's callback (the C name it looks for when it links).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    check(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@main
struct TokenFuzzer {
    static func main() {
        fuzzerMain(fuzzOne)
    }
}
