import Foundation
@testable import Notifications
import Testing

@Suite("Ids and records")
struct RecordTests {
    @Test func idsAreValidUniqueAndStrictlyIncreasing() {
        let generator = NotificationIDGenerator()
        var previous = ""
        var seen = Set<String>()
        for step in 0..<20_000 {
            let id = generator.next(millisecond: 1_765_318_000_000 + UInt64(step / 1000))
            #expect(NotificationIDGenerator.isValid(id))
            #expect(id > previous)
            seen.insert(id)
            previous = id
        }
        #expect(seen.count == 20_000)
    }

    @Test func idsSortByTimeAndSurviveAClockGoingBack() {
        let generator = NotificationIDGenerator()
        let later = generator.next(millisecond: 2_000_000_000_000)
        let earlierClock = generator.next(millisecond: 1_000_000_000_000)
        #expect(earlierClock > later)
        let other = NotificationIDGenerator()
        #expect(other.next(millisecond: 1_000_000_000_000) < other.next(millisecond: 1_000_000_000_001))
        #expect(NotificationIDGenerator.encode(millisecond: 0, high: 0, low: 0) == String(repeating: "0", count: 26))
        #expect(!NotificationIDGenerator.isValid("not-an-id"))
        #expect(!NotificationIDGenerator.isValid("0123456789ABCDEFGHJKMNPQRI"))  // I is not Crockford
    }

    @Test func recordJSONCarriesTheEventLessEventIDPlusItsOwnFields() throws {
        let body = EventValidatorTests.body(["username": EventValidatorTests.s("Zoë \"Z\""), "excerpt": EventValidatorTests.s("line\nbreak")])
        let event = try EventValidatorTests.validate(body).get()
        let record = NotificationRecord(event: event, id: "01KBZQ1VZ2X3Y4Z5A6B7C8D9E0", receivedAt: 1_765_318_000_123)
        let message = OutboundMessage.created(record, subjects: OutboundSubjects())
        #expect(message.subject == "users.user-123.notifications")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(message.body)) as? [String: Any])
        #expect(object["type"] as? String == "notification.created")
        let notification = try #require(object["notification"] as? [String: Any])
        #expect(Set(notification.keys) == [
            "id", "owner", "trigger_user", "username", "user_picture", "user_bio", "action", "resource_type",
            "resource_id", "excerpt", "created_at", "action_key", "read", "received_at",
            // Extension (delivery receipts): where it is in its life.
            "state",
        ])
        #expect(notification["state"] as? String == "created")
        #expect(notification["username"] as? String == "Zoë \"Z\"")
        #expect(notification["excerpt"] as? String == "line\nbreak")
        #expect(notification["read"] as? Bool == false)
        #expect(notification["received_at"] as? Int == 1_765_318_000_123)
        #expect(notification["action_key"] as? String == "1#POST#post-789#user-456")
        #expect(NotificationRecord(attributes: record.attributes) == record)
    }

    @Test func absentOptionalFieldsAreOmittedFromTheRecord() throws {
        let body = EventValidatorTests.body(dropping: ["username", "user_picture", "user_bio", "excerpt", "event_id"])
        let record = NotificationRecord(event: try EventValidatorTests.validate(body).get(), id: "01KBZQ1VZ2X3Y4Z5A6B7C8D9E0", receivedAt: 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(record.json)) as? [String: Any])
        #expect(object["username"] == nil && object["user_picture"] == nil && object["user_bio"] == nil && object["excerpt"] == nil)
        #expect(object["event_id"] == nil)
    }

    @Test func deletedAndReadBodies() throws {
        let deleted = OutboundMessage.deleted(id: "X1", owner: "ana", subjects: OutboundSubjects())
        #expect(String(decoding: deleted.body, as: UTF8.self) == #"{"type":"notification.deleted","id":"X1"}"#)
        let read = OutboundMessage.read(ids: ["A", "B"], owner: "ana", prefix: "p")
        #expect(read.subject == "p.ana.notifications")
        #expect(String(decoding: read.body, as: UTF8.self) == #"{"type":"notification.read","ids":["A","B"]}"#)
    }
}
