import Foundation
import KeyValueStore
@testable import Notifications
import Testing
import TestSupport

/// Preferences: what a user mutes (applied by the worker) and their quiet
/// hours (applied by the gateway).
@Suite("Preferences")
struct PreferencesTests {
    typealias R = RepositoryTests

    @Test(arguments: Backend.allCases)
    func mutedKindsAndResourcesAreCountedAndNotStored(backend: Backend) async throws {
        try await R.withRepository(backend) { repository in
            let like = try #require(R.created(try await repository.apply([R.event("post.like", trigger: "ben", resource: "p1")]).outcomes[0]))
            try await repository.setPreferences(
                Preferences(mutedKinds: ["post.like"], mutedResources: [MutedResource(type: "POST", id: "p9")]), owner: "ana")
            let result = try await repository.apply([
                R.event("post.like", trigger: "cy", resource: "p2"),
                R.event("reply.post", trigger: "cy", resource: "p9"),
                R.event("reply.post", trigger: "cy", resource: "p1"),
                R.event("user.follow", trigger: "cy", resource: "ana"),
                R.event("post.like", owner: "bob", trigger: "cy", resource: "p2"),
                // What was stored before the mute can still be retracted.
                R.event("post.unlike", trigger: "ben", resource: "p1"),
            ])
            #expect(result.outcomes[0] == .muted)
            #expect(result.outcomes[1] == .muted)
            #expect(R.created(result.outcomes[2]) != nil)
            #expect(R.created(result.outcomes[3]) != nil)
            #expect(R.created(result.outcomes[4]) != nil, "another user's preferences do not apply")
            #expect(result.outcomes[5] == .retracted(id: like))
            #expect(try await repository.feed(owner: "ana", limit: 10).items.map(\.resourceType) == ["USER", "POST"])
            #expect(try await repository.unreadCount(owner: "ana") == 2)
            // Unmuted: likes notify again.
            try await repository.setPreferences(Preferences(), owner: "ana")
            #expect(R.created(try await repository.apply([R.event("post.like", trigger: "dee", resource: "p2")]).outcomes[0]) != nil)
            #expect(try await repository.preferences(owner: "ana") == Preferences())
        }
    }

    @Test func preferencesParseAndPrintTheSameJSON() throws {
        let body = #"{"muted_kinds":["post.like","user.follow"],"muted_resources":[{"resource_type":"POST","resource_id":"p-1"}],"muted_channels":["email","webhook"],"quiet_hours":{"start":"22:00","end":"07:30","time_zone":"Europe/Paris"}}"#
        let preferences = try Preferences.parse(Array(body.utf8)).get()
        #expect(preferences.mutedKinds == ["post.like", "user.follow"])
        #expect(preferences.quietHours == QuietHours(start: 22 * 60, end: 7 * 60 + 30, timeZone: "Europe/Paris"))
        #expect(String(decoding: preferences.json, as: UTF8.self) == body)
        #expect(String(decoding: Preferences().json, as: UTF8.self) == #"{"muted_kinds":[],"muted_resources":[],"muted_channels":[],"quiet_hours":null}"#)
        #expect(Preferences(attributes: preferences.attributes) == preferences)
    }

    @Test(arguments: [
        ("[]", "JSON object"),
        (#"{"muted_kinds":["post.unlike"]}"#, "muted_kinds holds event kinds"),
        (#"{"muted_kinds":"post.like"}"#, "muted_kinds must be an array"),
        (#"{"muted_resources":[{"resource_type":"PAGE","resource_id":"x"}]}"#, "muted_resources holds objects"),
        (#"{"muted_resources":[{"resource_type":"POST","resource_id":""}]}"#, "muted_resources holds objects"),
        (#"{"quiet_hours":{"start":"22:00","end":"7:00","time_zone":"UTC"}}"#, "HH:MM"),
        (#"{"quiet_hours":{"start":"24:00","end":"07:00","time_zone":"UTC"}}"#, "HH:MM"),
        (#"{"quiet_hours":{"start":"07:00","end":"07:00","time_zone":"UTC"}}"#, "must differ"),
        (#"{"quiet_hours":{"start":"22:00","end":"07:00","time_zone":"Mars/Olympus"}}"#, "IANA time zone"),
        (#"{"quiet_hours":{"start":"22:00","end":"07:00"}}"#, "IANA time zone"),
        (#"{"mute":["post.like"]}"#, "unknown field 'mute'"),
        (#"{"muted_channels":["sms"]}"#, "muted_channels holds channels: email, webpush, webhook"),
        (#"{"muted_channels":"email"}"#, "muted_channels must be an array"),
    ])
    func badPreferencesAreRefusedWithWhatToFix(body: String, message: String) {
        guard case .failure(let error) = Preferences.parse(Array(body.utf8)) else {
            Issue.record("\(body) was accepted")
            return
        }
        #expect(error.message.contains(message), "\(error.message)")
    }

    /// 2026-01-15 (Paris is UTC+1 in winter) and 2026-07-15 (UTC+2).
    static func utc(_ text: String) -> Int64 {
        let formatter = ISO8601DateFormatter()
        return Int64(formatter.date(from: text)!.timeIntervalSince1970)
    }

    @Test func quietHoursFollowTheUsersTimeZoneAcrossMidnightAndSummerTime() {
        let night = QuietHours(start: 22 * 60, end: 7 * 60, timeZone: "Europe/Paris")
        // 23:30 in Paris in winter: quiet until 07:00 Paris, 06:00 UTC.
        #expect(night.end(ifQuietAt: Self.utc("2026-01-15T22:30:00Z")) == Self.utc("2026-01-16T06:00:00Z"))
        // 06:59 Paris: still quiet for a minute.
        #expect(night.end(ifQuietAt: Self.utc("2026-01-16T05:59:00Z")) == Self.utc("2026-01-16T06:00:00Z"))
        #expect(night.end(ifQuietAt: Self.utc("2026-01-16T06:00:00Z")) == nil)
        #expect(night.end(ifQuietAt: Self.utc("2026-01-15T12:00:00Z")) == nil)
        // 21:30 UTC is 23:30 in Paris in summer.
        #expect(night.end(ifQuietAt: Self.utc("2026-07-15T21:30:00Z")) == Self.utc("2026-07-16T05:00:00Z"))
        let day = QuietHours(start: 9 * 60, end: 17 * 60, timeZone: "UTC")
        #expect(day.end(ifQuietAt: Self.utc("2026-01-15T09:00:00Z")) == Self.utc("2026-01-15T17:00:00Z"))
        #expect(day.end(ifQuietAt: Self.utc("2026-01-15T08:59:59Z")) == nil)
        #expect(day.end(ifQuietAt: Self.utc("2026-01-15T17:00:00Z")) == nil)
    }
}
