// The event decoder and validator under libFuzzer (`make fuzz`): any bytes
// on any subject must be accepted or rejected with a reason, never crash,
// and an accepted event must satisfy the rules of CONTRACT §1. Built
// without FUZZING, the same checks replay a corpus (`EventFuzzer DIR...`).
import FuzzSupport
import Notifications

private let validator = EventValidator(subjects: EventSubjects(filter: "notifications.>"))
/// The first input byte picks the subject: every kind, plus unknown ones.
private let subjects = EventKind.all.map { "notifications." + $0.name } + [
    "notifications.unknown.kind", "notifications.post", "notifications.post.like.extra",
]
private let now: Int64 = 1_765_318_000

func check(_ input: UnsafeRawBufferPointer) {
    guard let first = input.first else { return }
    let subject = subjects[Int(first) % subjects.count]
    let body = Array(input.dropFirst())
    switch validator.validate(subject: subject, body: body, now: now) {
    case .success(let event):
        precondition(body.count <= EventValidator.maxBodyBytes, "accepted a body over the size limit")
        precondition(EventValidator.isValidUserID(event.owner), "accepted an invalid owner")
        precondition(EventValidator.isValidUserID(event.triggerUser), "accepted an invalid trigger_user")
    case .failure(let rejection):
        precondition(!rejection.detail.isEmpty, "a rejection without a detail")
    }
}

/// libFuzzer's callback (the C name it looks for when it links).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    check(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@main
struct EventFuzzer {
    static func main() {
        fuzzerMain(fuzzOne)
    }
}
