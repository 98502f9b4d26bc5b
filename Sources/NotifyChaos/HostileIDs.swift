import Foundation
import NATS
import ProcessSupport

/// User ids that would change a NATS subject (`>`, `*`, `a.b`, `$SYS`) or
/// are otherwise outside CONTRACT §1's `[A-Za-z0-9_-]{1,128}`, in events
/// and in tokens; and `created_at` at and past its bounds.
enum HostileIDs {
    /// Ids §1 forbids, by name.
    static let ids: [(name: String, id: String)] = [
        (">", ">"), ("*", "*"), ("a.b", "a.b"), ("a b", "a b"), ("$SYS", "$SYS"), ("empty", ""), ("non-ASCII", "ünï"),
        ("users.alice", "users.alice"), ("129 characters", String(repeating: "a", count: 129)), ("tab", "a\tb"),
    ]

    static let subject = "notifications.post.like"

    /// A like as JSON text, every field given.
    static func body(owner: String, trigger: String, resource: String, createdAt: String) -> [UInt8] {
        Array(#"{"owner":\#(quoted(owner)),"trigger_user":\#(quoted(trigger)),"action":1,"resource_type":"POST","resource_id":\#(quoted(resource)),"created_at":\#(createdAt),"username":"x"}"#.utf8)
    }

    /// `text` as a JSON string literal.
    static func quoted(_ text: String) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: text, options: [.fragmentsAllowed])) ?? Data("\"\"".utf8), as: UTF8.self)
    }

    static func run(_ harness: Harness, _ checks: inout Checks) async throws {
        let worker = try await harness.startNotify("worker")
        let gateway = try await harness.startNotify("gateway")
        let port = try await gateway.waitForPort()
        let users = ["alice", "bob"]
        let clients = users.map { FeedClient(user: $0, token: Tokens.valid(user: $0)) }
        let clientTasks = clients.map { client in Task { await client.run(port: port) } }
        let perUser = try await SubjectRecorder(harness.connection, subject: "users.>")
        let deadLetters = try await SubjectRecorder(harness.connection, subject: "dlq.>")
        let connected = await waitFor(timeout: .seconds(10)) { clients.allSatisfy { $0.snapshot.hellos > 0 } ? true : nil } ?? false
        guard connected else { throw ChaosError("the clients did not get their hello within 10 s") }
        let now = Int(Date().timeIntervalSince1970)

        // Events whose owner or trigger_user is a hostile id: each dead-lettered.
        var hostile: [(name: String, body: [UInt8])] = []
        for (index, entry) in ids.enumerated() {
            hostile.append(("owner \(entry.name)", body(owner: entry.id, trigger: "t1", resource: "owner-\(index)", createdAt: String(now - 60))))
            hostile.append(("trigger_user \(entry.name)", body(owner: "alice", trigger: entry.id, resource: "trigger-\(index)", createdAt: String(now - 60))))
        }
        // created_at outside §1: a year ahead, a string, a float, negative.
        let badTimes: [(name: String, value: String)] = [
            ("a year ahead", String(now + 365 * 86_400)), ("a string", "\"\(now - 60)\""), ("a float", "\(now - 60).5"), ("negative", "-60"),
        ]
        for (index, entry) in badTimes.enumerated() {
            hostile.append(("created_at \(entry.name)", body(owner: "alice", trigger: "t2", resource: "time-\(index)", createdAt: entry.value)))
        }
        for entry in hostile { _ = try await harness.jetStream.publish(subject, payload: entry.body) }
        let lettered = await waitFor(timeout: .seconds(15)) { deadLetters.count >= hostile.count ? true : nil } ?? false
        let letters = deadLetters.received
        var wrong: [String] = []
        for entry in hostile {
            let letter = letters.first { $0.payload == entry.body }
            let reason = letter?.headers["Notify-Error"]
            if reason != "invalid_field" || letter?.subject != "dlq." + subject { wrong.append("\(entry.name): \(reason ?? "no dead letter")") }
        }
        let idCount = ids.count * 2
        checks.add("events with owner or trigger_user \(ids.map { $0.name == "empty" ? "\"\"" : "'\($0.name)'" }.joined(separator: ", ")) → dead-lettered invalid_field",
                   "\(idCount - wrong.filter { !$0.hasPrefix("created_at") }.count)/\(idCount) dead-lettered invalid_field\(lettered ? "" : " (waited 15 s)")\(sample(wrong.filter { !$0.hasPrefix("created_at") }))",
                   wrong.filter { !$0.hasPrefix("created_at") }.isEmpty)
        checks.add("created_at a year ahead, a string, a float, negative → dead-lettered invalid_field",
                   "\(badTimes.count - wrong.filter { $0.hasPrefix("created_at") }.count)/\(badTimes.count) dead-lettered invalid_field\(sample(wrong.filter { $0.hasPrefix("created_at") }, 4))",
                   wrong.filter { $0.hasPrefix("created_at") }.isEmpty)

        // A year-old event is accepted; its place in the feed comes from the
        // store sequence (after the one stored before it), not from created_at.
        let recent = body(owner: "bob", trigger: "t3", resource: "recent", createdAt: String(now - 60))
        let yearOld = body(owner: "bob", trigger: "t3", resource: "year-old", createdAt: String(now - 365 * 86_400))
        _ = try await harness.jetStream.publish(subject, payload: recent)
        _ = await waitFor(timeout: .seconds(10)) { (try? await GatewayCrashes.feedIDs(port: port, user: "bob"))?.count == 1 ? true : nil }
        _ = try await harness.jetStream.publish(subject, payload: yearOld)
        let feed = await waitFor(timeout: .seconds(10)) { () -> [[String: Any]]? in
            let reply = try? await HTTPProbe.request(port: port, path: "/v1/notifications", headers: [("Authorization", "Bearer \(Tokens.valid(user: "bob"))")])
            let items = reply?.json?["items"] as? [[String: Any]] ?? []
            return items.count >= 2 ? items : nil
        } ?? []
        let order = feed.map { ($0["resource_id"] as? String ?? "?") + " (created_at \($0["created_at"] as? Int ?? 0))" }
        let feedOrder = feed.compactMap { $0["id"] as? String }
        checks.add("a year-old created_at is accepted and placed by store order: newest first, it comes before the event stored ahead of it",
                   "bob's feed: \(order.isEmpty ? "not 2 items within 10 s" : order.joined(separator: ", ")); ids \(feedOrder.joined(separator: " > "))",
                   feed.count == 2 && feed.first?["resource_id"] as? String == "year-old" && feed.first?["created_at"] as? Int == now - 365 * 86_400
                       && feedOrder.count == 2 && feedOrder[0] > feedOrder[1])

        // Tokens naming a hostile user id, as `sub` or as `userId`.
        var refused = 0
        var answered: [String] = []
        for entry in Self.ids {
            for claim in ["sub", "userId"] {
                let token = Tokens.signed(claims: #"{"\#(claim)":\#(quoted(entry.id)),"exp":\#(now + 3_600)}"#)
                for (name, path, headers) in [("GET /v1/notifications", "/v1/notifications", [("Authorization", "Bearer \(token)")]),
                                              ("GET /ws", "/ws?access_token=\(token)", HTTPProbe.webSocketUpgrade)] {
                    let reply = try? await HTTPProbe.request(port: port, path: path, headers: headers)
                    if reply?.status == 401, reply?.json?["error"] != nil { refused += 1 } else { answered.append("\(claim) \(entry.name) on \(name): \(reply.map { String($0.status) } ?? "no answer")") }
                }
            }
        }
        let attempts = Self.ids.count * 4
        checks.add("tokens whose sub or userId is one of those ids → 401 with a JSON error on the feed API and /ws (no upgrade)",
                   "\(refused)/\(attempts) refused\(sample(answered))", refused == attempts)

        // Then two ordinary notifications each: the per-user subjects carry
        // only alice's and bob's, and each client received exactly its feed.
        let legit = users.flatMap { user in (0..<2).map { ChaosEvent(kind: "user.follow", owner: user, trigger: "f\($0)", resource: user, eventID: nil) } }
        for event in legit { _ = try await harness.jetStream.publish(event.subject, payload: event.body) }
        let drained = await harness.waitUntilDrained(timeout: .seconds(20))
        var mismatches: [String] = []
        for client in clients {
            let feed = try await GatewayCrashes.feedIDs(port: port, user: client.user)
            _ = await waitFor(timeout: .seconds(5)) { Set(client.snapshot.created) == feed ? true : nil }
            let got = Set(client.snapshot.created)
            if got != feed { mismatches.append("\(client.user): \(got.subtracting(feed).count) received not in its feed, \(feed.subtracting(got).count) of its feed not received") }
        }
        var subjects: [String: Int] = [:]
        var foreign: [String] = []
        for message in perUser.received {
            subjects[message.subject, default: 0] += 1
            let owner = ((try? JSONSerialization.jsonObject(with: Data(message.payload))) as? [String: Any])
                .flatMap { $0["notification"] as? [String: Any] }?["owner"] as? String
            if let owner, message.subject != "users.\(owner).notifications" { foreign.append("\(owner) on \(message.subject)") }
        }
        let expectedSubjects: Set<String> = ["users.alice.notifications", "users.bob.notifications"]
        checks.add("nobody receives another user's notifications: per-user messages only on alice's and bob's subjects, each on its owner's; each client received exactly its feed",
                   "per-user messages: \(subjects.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")); \(foreign.count) on another owner's subject; clients: \(mismatches.isEmpty ? "both equal their feeds" : mismatches.joined(separator: "; "))",
                   Set(subjects.keys).isSubset(of: expectedSubjects) && !subjects.isEmpty && foreign.isEmpty && mismatches.isEmpty)
        for client in clients { client.stop() }
        for task in clientTasks { await task.value }
        perUser.stop()
        deadLetters.stop()

        var required: [String: Set<String>] = ["bob": ["1#POST#recent#t3", "1#POST#year-old#t3"]]
        for event in legit { required[event.owner, default: []].insert(event.actionKey) }
        checks.checkStore(try await StoreInspector.snapshot(harness.databasePath), required: required)
        checks.checkDrained(drained)
        checks.add("worker and gateway still serving", "worker alive \(worker.isRunning), gateway alive \(gateway.isRunning)", worker.isRunning && gateway.isRunning)
        gateway.stop()
        worker.stop()
    }
}
