import JSON
@testable import Notifications
import Testing

/// One test per rule of CONTRACT §1.
@Suite("Event validation")
struct EventValidatorTests {
    static let now: Int64 = 1_765_318_000
    static let validator = EventValidator(subjects: EventSubjects(filter: "notifications.>"))

    /// The contract's example, field by field as JSON fragments.
    static let base: [(String, String)] = [
        ("owner", q("user-123")), ("trigger_user", q("user-456")), ("username", q("John Doe")),
        ("user_picture", q("https://cdn.example.com/u/456.jpg")), ("user_bio", q("Software dev")), ("action", "1"),
        ("resource_type", q("POST")), ("resource_id", q("post-789")), ("excerpt", q("Great post!...")),
        ("created_at", String(now)), ("event_id", q("optional-idempotency-key")),
    ]

    /// A JSON string literal.
    static func q(_ text: String) -> String {
        var writer = JSONWriter()
        writer.string(text)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// The base event with fields replaced by JSON fragments (`nil` = JSON
    /// null), added, or dropped.
    static func body(_ changes: [String: String?] = [:], dropping: [String] = []) -> [UInt8] {
        var fields = base.filter { !dropping.contains($0.0) }
        for (key, value) in changes.sorted(by: { $0.key < $1.key }) {
            let fragment = value ?? "null"
            if let index = fields.firstIndex(where: { $0.0 == key }) {
                fields[index].1 = fragment
            } else if !dropping.contains(key) {
                fields.append((key, fragment))
            }
        }
        return Array(("{" + fields.map { "\(q($0.0)):\($0.1)" }.joined(separator: ",") + "}").utf8)
    }

    /// A string field's value as a change.
    static func s(_ text: String) -> String? { q(text) }

    static func validate(_ body: [UInt8], subject: String = "notifications.post.like") -> Result<NotificationEvent, EventRejection> {
        validator.validate(subject: subject, body: body, now: now)
    }

    static func reason(_ body: [UInt8], subject: String = "notifications.post.like") -> RejectionReason? {
        if case .failure(let rejection) = validate(body, subject: subject) { return rejection.reason }
        return nil
    }

    @Test func theContractsExampleIsValid() throws {
        let event = try Self.validate(Self.body()).get()
        #expect(event.owner == "user-123")
        #expect(event.triggerUser == "user-456")
        #expect(event.username == "John Doe")
        #expect(event.userPicture == "https://cdn.example.com/u/456.jpg")
        #expect(event.action == 1)
        #expect(event.resourceType == "POST")
        #expect(event.resourceID == "post-789")
        #expect(event.createdAt == Self.now)
        #expect(event.eventID == "optional-idempotency-key")
        #expect(event.actionKey == "1#POST#post-789#user-456")
        #expect(!event.isSelfNotification)
    }

    @Test(arguments: EventKind.all)
    func everySubjectOfTheTableMapsToItsActionAndResourceType(kind: EventKind) throws {
        let body = Self.body(["action": String(kind.action), "resource_type": Self.s(kind.resourceType)])
        let event = try Self.validate(body, subject: "notifications." + kind.name).get()
        #expect(event.kind == kind)
        #expect(event.action == kind.action)
    }

    @Test func theTableIsTheContracts() {
        let rows = EventKind.all.map { "\($0.name) \($0.action) \($0.resourceType) \($0.effect)" }
        #expect(rows == [
            "post.like 1 POST create", "comment.like 2 COMMENT create", "reply.post 3 POST create",
            "reply.comment 4 COMMENT create", "user.follow 5 USER create", "post.unlike 1 POST retract",
            "comment.unlike 2 COMMENT retract", "user.unfollow 5 USER retract",
        ])
    }

    @Test(arguments: ["notifications.post.share", "notifications.post", "notifications", "other.post.like", "notifications.post.like.extra", "notificationsX.post.like"])
    func unknownSubjects(subject: String) {
        #expect(Self.reason(Self.body(), subject: subject) == .unknownSubject)
    }

    @Test func aCustomPrefixIsHonoured() throws {
        let validator = EventValidator(subjects: EventSubjects(filter: "prod.events.>"))
        #expect(throws: Never.self) { try validator.validate(subject: "prod.events.post.like", body: Self.body(), now: Self.now).get() }
        if case .failure(let rejection) = validator.validate(subject: "notifications.post.like", body: Self.body(), now: Self.now) {
            #expect(rejection.reason == .unknownSubject)
        } else {
            Issue.record("expected a rejection")
        }
    }

    // MARK: Size, encoding, syntax

    @Test func aBodyOf64KiBIsAcceptedAndOneByteMoreIsTooLarge() throws {
        let overhead = Self.body(["excerpt": Self.s("")]).count
        let exact = Self.body(["excerpt": Self.s(String(repeating: "x", count: EventValidator.maxBodyBytes - overhead))])
        #expect(exact.count == EventValidator.maxBodyBytes)
        let event = try Self.validate(exact).get()
        #expect(event.excerpt?.count == EventValidator.excerptLength)
        let over = Self.body(["excerpt": Self.s(String(repeating: "x", count: EventValidator.maxBodyBytes - overhead + 1))])
        #expect(over.count == EventValidator.maxBodyBytes + 1)
        #expect(Self.reason(over) == .tooLarge)
    }

    @Test func invalidUTF8IsInvalidJSON() {
        var body = Self.body()
        body.insert(0xFF, at: body.count - 2)
        #expect(Self.reason(body) == .invalidJSON)
        #expect(Self.reason([0x7B, 0xC3, 0x28, 0x7D]) == .invalidJSON)
    }

    @Test(arguments: ["not json", "[1,2]", "\"text\"", "42", "null", "{\"owner\":", ""])
    func notAJSONObjectIsInvalidJSON(text: String) {
        #expect(Self.reason(Array(text.utf8)) == .invalidJSON)
    }

    @Test func duplicateKeysAndLoneSurrogatesAreInvalidJSON() {
        let duplicate = Array(#"{"owner":"a","owner":"b","trigger_user":"c","action":1,"resource_type":"POST","resource_id":"r","created_at":1765318000}"#.utf8)
        #expect(Self.reason(duplicate) == .invalidJSON)
        let surrogate = Array(#"{"owner":"a","trigger_user":"c","action":1,"resource_type":"POST","resource_id":"\ud800","created_at":1765318000}"#.utf8)
        #expect(Self.reason(surrogate) == .invalidJSON)
        var nul = Self.body()
        nul.insert(0, at: 10)
        #expect(Self.reason(nul) == .invalidJSON)
    }

    // MARK: Required fields

    @Test(arguments: ["owner", "trigger_user", "action", "resource_type", "resource_id", "created_at"])
    func aRequiredFieldAbsentOrNullIsMissing(field: String) {
        #expect(Self.reason(Self.body(dropping: [field])) == .missingField)
        #expect(Self.reason(Self.body([field: nil])) == .missingField)
    }

    @Test(arguments: ["username", "user_picture", "user_bio", "excerpt", "event_id"])
    func anOptionalFieldAbsentOrNullIsOmitted(field: String) throws {
        for body in [Self.body(dropping: [field]), Self.body([field: nil])] {
            let event = try Self.validate(body).get()
            let values: [String: String?] = [
                "username": event.username, "user_picture": event.userPicture, "user_bio": event.userBio,
                "excerpt": event.excerpt, "event_id": event.eventID,
            ]
            #expect(values[field]! == nil)
        }
    }

    @Test func unknownFieldsAreIgnored() throws {
        let event = try Self.validate(Self.body(["extra": #"{"nested":true}"#, "another": "1"])).get()
        #expect(event.owner == "user-123")
    }

    // MARK: User ids

    @Test(arguments: ["owner", "trigger_user"], [".", "*", ">", "a.b", "a b", "a*", "a>", "$SYS", "ünïcode", "a\u{200B}b", "", String(repeating: "a", count: 129)])
    func userIDsOutsideTheCharsetOrLengthAreInvalid(field: String, value: String) {
        #expect(Self.reason(Self.body([field: Self.s(value)])) == .invalidField)
    }

    @Test func userIDsOfOneAnd128CharactersAreValid() throws {
        _ = try Self.validate(Self.body(["owner": Self.s("a"), "trigger_user": Self.s(String(repeating: "Z", count: 128))])).get()
        _ = try Self.validate(Self.body(["owner": Self.s("A_b-9"), "trigger_user": Self.s("x")])).get()
    }

    // MARK: Types

    @Test(arguments: [
        ("owner", "5"), ("trigger_user", "true"), ("action", #""1""#), ("action", "1.5"), ("action", "1e0"),
        ("resource_type", "1"), ("resource_id", #"["x"]"#), ("created_at", #""1765318000""#),
        ("created_at", "1765318000.5"), ("username", "7"), ("user_picture", "false"),
        ("user_bio", #"{"b":1}"#), ("excerpt", "3"), ("event_id", "12"),
    ])
    func aFieldOfTheWrongTypeIsInvalid(field: String, value: String) {
        #expect(Self.reason(Self.body([field: value])) == .invalidField)
    }

    @Test(arguments: ["owner", "trigger_user", "resource_type", "resource_id", "username", "user_picture", "user_bio", "excerpt", "event_id"])
    func anEmptyStringIsInvalid(field: String) {
        #expect(Self.reason(Self.body([field: Self.s("")])) == .invalidField)
    }

    @Test func integerOverflowIsInvalid() {
        let body = Array(#"{"owner":"a","trigger_user":"b","action":1,"resource_type":"POST","resource_id":"r","created_at":99999999999999999999999}"#.utf8)
        #expect(Self.reason(body) == .invalidField)
        let float = Array(#"{"owner":"a","trigger_user":"b","action":1.0,"resource_type":"POST","resource_id":"r","created_at":1765318000}"#.utf8)
        #expect(Self.reason(float) == .invalidField)
    }

    // MARK: Rules

    @Test func resourceIDLengthAndPrintability() throws {
        _ = try Self.validate(Self.body(["resource_id": Self.s(String(repeating: "é", count: 256))])).get()
        #expect(Self.reason(Self.body(["resource_id": Self.s(String(repeating: "é", count: 257))])) == .invalidField)
        for bad in ["a\u{0}b", "a\nb", "a\u{7F}", "a\u{85}", "a\u{200B}b", "a\u{202E}b", "a\u{2028}b"] {
            #expect(Self.reason(Self.body(["resource_id": Self.s(bad)])) == .invalidField, "\(bad.unicodeScalars.map(\.value))")
        }
        _ = try Self.validate(Self.body(["resource_id": Self.s("post#1 (🎉 ünïcode)")])).get()
    }

    @Test func createdAtBounds() throws {
        _ = try Self.validate(Self.body(["created_at": "946684800"])).get()
        #expect(Self.reason(Self.body(["created_at": "946684799"])) == .invalidField)
        _ = try Self.validate(Self.body(["created_at": String(Self.now + 86_400)])).get()
        #expect(Self.reason(Self.body(["created_at": String(Self.now + 86_401)])) == .invalidField)
        #expect(Self.reason(Self.body(["created_at": String(Self.now + 365 * 86_400)])) == .invalidField)
        #expect(Self.reason(Self.body(["created_at": "-1"])) == .invalidField)
        _ = try Self.validate(Self.body(["created_at": String(Self.now - 365 * 86_400)])).get()
    }

    @Test func lengthLimitsCountUnicodeScalars() throws {
        for (field, limit) in [("username", 128), ("user_bio", 512), ("event_id", 128)] {
            _ = try Self.validate(Self.body([field: Self.s(String(repeating: "ü", count: limit))])).get()
            #expect(Self.reason(Self.body([field: Self.s(String(repeating: "ü", count: limit + 1))])) == .invalidField, "\(field)")
        }
    }

    @Test func userPictureMustBeAnAbsoluteWebURLWithAHost() throws {
        for good in ["http://a.example/x.png", "https://cdn.example.com/u/456.jpg?size=64", "HTTPS://EXAMPLE.COM"] {
            _ = try Self.validate(Self.body(["user_picture": Self.s(good)])).get()
        }
        for bad in ["ftp://example.com/a.png", "javascript:alert(1)", "/relative/path.png", "https://", "http:///path", "example.com/a.png", "https://exa mple.com", "data:image/png;base64,AAAA"] {
            #expect(Self.reason(Self.body(["user_picture": Self.s(bad)])) == .invalidField, "\(bad)")
        }
        let long = "https://example.com/" + String(repeating: "a", count: 2048 - 20)
        _ = try Self.validate(Self.body(["user_picture": Self.s(long)])).get()
        #expect(Self.reason(Self.body(["user_picture": Self.s(long + "a")])) == .invalidField)
    }

    @Test func theExcerptKeepsItsFirst280GraphemeClustersWithoutEllipsis() throws {
        let family = "👨‍👩‍👧‍👦"  // one grapheme cluster, seven scalars
        let long = String(repeating: family, count: 300)
        let event = try Self.validate(Self.body(["excerpt": Self.s(long)])).get()
        #expect(event.excerpt == String(repeating: family, count: 280))
        let combining = String(repeating: "e\u{301}", count: 281)
        #expect(try Self.validate(Self.body(["excerpt": Self.s(combining)])).get().excerpt == String(repeating: "e\u{301}", count: 280))
        #expect(try Self.validate(Self.body(["excerpt": Self.s("short")])).get().excerpt == "short")
    }

    @Test func actionOrResourceTypeNotTheSubjectsIsAMismatch() {
        #expect(Self.reason(Self.body(["action": "2"])) == .actionMismatch)
        #expect(Self.reason(Self.body(["resource_type": Self.s("COMMENT")])) == .actionMismatch)
        #expect(Self.reason(Self.body(["resource_type": Self.s("post")])) == .actionMismatch)
        #expect(Self.reason(Self.body(["action": "1", "resource_type": Self.s("POST")]), subject: "notifications.comment.like") == .actionMismatch)
    }

    @Test func reasonsFollowTheDocumentedOrder() {
        // missing beats invalid; invalid beats mismatch
        #expect(Self.reason(Self.body(["owner": Self.s("a b")], dropping: ["created_at"])) == .missingField)
        #expect(Self.reason(Self.body(["action": "9", "username": "5"])) == .invalidField)
    }

    @Test func selfNotificationsAreValidEventsMarkedAsSuch() throws {
        let event = try Self.validate(Self.body(["owner": Self.s("same"), "trigger_user": Self.s("same")])).get()
        #expect(event.isSelfNotification)
    }

    @Test func roomSubjectsNameTheRoomAndTheEventHasNoOwner() throws {
        let channel = try Self.validate(Self.body(dropping: ["owner"]), subject: "notifications.channel.live-1.post.like").get()
        #expect(channel.room == Room.channel("live-1"))
        #expect(channel.owner == "@channel:live-1")
        #expect(channel.kind.name == "post.like")
        #expect(!channel.isSelfNotification)
        let global = try Self.validate(Self.body(["action": "5", "resource_type": Self.s("USER")], dropping: ["owner"]), subject: "notifications.global.user.follow").get()
        #expect(global.room == .global)
        #expect(global.kind.name == "user.follow")
        // A room event with an owner is ambiguous.
        #expect(Self.reason(Self.body(), subject: "notifications.global.post.like") == .invalidField)
        #expect(Self.reason(Self.body(["owner": nil]), subject: "notifications.global.post.like") == nil)
        for subject in ["notifications.channel.post.like", "notifications.channel.a.b.post.like", "notifications.channel..post.like",
                        "notifications.global.post", "notifications.global", "notifications.channel.x.post.share"] {
            #expect(Self.reason(Self.body(dropping: ["owner"]), subject: subject) == .unknownSubject, "\(subject)")
        }
        let subjects = EventSubjects(filter: "notifications.>")
        #expect(subjects.subject(for: channel.kind, room: channel.room) == "notifications.channel.live-1.post.like")
        #expect(Room.channel("live-1")?.subject(prefix: "rooms") == "rooms.channel.live-1.notifications")
        #expect(Room.global.subject(prefix: "rooms") == "rooms.global.notifications")
        #expect(Room("global") == .global && Room("channel:") == nil && Room("user:ana") == nil)
        #expect(OutboundSubjects().subject(owner: "@global") == "rooms.global.notifications")
        #expect(OutboundSubjects().subject(owner: "global") == "users.global.notifications")
    }
}
