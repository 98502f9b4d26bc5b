import Foundation
import KeyValueStore
import NATS
import ProcessSupport

/// Bodies built to break a parser or a validator, each of which must be
/// dead-lettered with its reason (or, where CONTRACT §1 allows it,
/// accepted), without the worker growing or stopping.
enum HostileEvents {
    enum Expectation: Equatable {
        /// Dead-lettered on `dlq.<subject>` with this `Notify-Error`.
        case rejected(String)
        /// Stored, with `username` exactly as sent.
        case accepted(username: String)
    }

    struct Case {
        let name: String
        let body: [UInt8]
        let expected: Expectation
    }

    static let subject = "notifications.post.like"
    /// In every hostile body; must never appear in the worker's log (the
    /// contract says the reason is logged, never the payload).
    static let marker = "HOSTILE-PAYLOAD-MARKER"

    /// A like from `t1` to `h1` whose fields are JSON text given as is.
    static func body(owner: String = #""h1""#, resource: String = #""hr""#, action: String = "1", createdAt: String? = nil,
                     username: [UInt8] = Array(#""\#(marker)""#.utf8), extra: String = "") -> [UInt8] {
        let created = createdAt ?? String(Int(Date().timeIntervalSince1970) - 60)
        return Array(#"{"owner":\#(owner),"trigger_user":"t1","action":\#(action),"resource_type":"POST","resource_id":\#(resource),"created_at":\#(created),"username":"#.utf8)
            + username + Array("\(extra)}".utf8)
    }

    static func cases(bigBody: Int) -> [Case] {
        let rtl = "\u{202E}\(marker)\u{200B}\u{200D}\u{2067}x\u{2069}"
        let padding = bigBody - body(extra: #","excerpt":"""#).count
        return [
            Case(name: "invalid JSON", body: Array(#"{"owner":"h1","username":"\#(marker)","trigger_user":"#.utf8), expected: .rejected("invalid_json")),
            Case(name: "10,000-deep nesting", body: body(extra: ",\"x\":" + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)),
                 expected: .rejected("invalid_json")),
            Case(name: "\(bigBody) byte body", body: body(extra: #","excerpt":""# + String(repeating: "a", count: max(padding, 0)) + #"""#),
                 expected: .rejected("too_large")),
            Case(name: "raw NUL byte in a string", body: body(username: Array(#""\#(marker)"#.utf8) + [0] + Array(#"x""#.utf8)), expected: .rejected("invalid_json")),
            Case(name: "\\u0000 in resource_id", body: body(resource: #""r\u0000x""#), expected: .rejected("invalid_field")),
            Case(name: "invalid UTF-8", body: body(username: Array(#""\#(marker)"#.utf8) + [0xC3, 0x28, 0xFF] + Array(#"""#.utf8)), expected: .rejected("invalid_json")),
            Case(name: "lone surrogate \\ud800", body: body(username: Array(#""\#(marker)\ud800""#.utf8)), expected: .rejected("invalid_json")),
            Case(name: "RTL override and zero-width chars in username", body: body(resource: #""hr-rtl""#, username: Array("\"\(rtl)\"".utf8)),
                 expected: .accepted(username: rtl)),
            Case(name: "zero-width space in owner", body: body(owner: "\"h\u{200B}1\""), expected: .rejected("invalid_field")),
            Case(name: "RTL override in resource_id", body: body(resource: "\"r\u{202E}1\""), expected: .rejected("invalid_field")),
            Case(name: "integer overflow in action", body: body(action: "99999999999999999999"), expected: .rejected("invalid_field")),
            Case(name: "integer overflow in created_at", body: body(createdAt: "-99999999999999999999999"), expected: .rejected("invalid_field")),
            Case(name: "duplicate keys", body: Array(#"{"owner":"h2","#.utf8) + body().dropFirst(), expected: .rejected("invalid_json")),
        ]
    }

    static func run(_ harness: Harness, _ checks: inout Checks) async throws {
        let worker = try await harness.startNotify("worker")
        let deadLetters = try await SubjectRecorder(harness.connection, subject: "dlq.>")

        // Each case once: its dead letter (or its record) must appear.
        var bigBody = 1 << 20
        var required: [String: Set<String>] = [:]
        for hostile in cases(bigBody: bigBody) {
            var body = hostile.body
            var note = ""
            do {
                _ = try await harness.jetStream.publish(subject, payload: body)
            } catch {
                // nats-server's max_payload is 1 MiB, headers included.
                bigBody = (1 << 20) - 1_024
                body = cases(bigBody: bigBody).first { $0.expected == hostile.expected && $0.name.hasSuffix("byte body") }?.body ?? body
                note = " (nats-server refused \(hostile.body.count) bytes: \(error.statusText); sent \(body.count))"
                _ = try await harness.jetStream.publish(subject, payload: body)
            }
            switch hostile.expected {
            case .rejected(let reason):
                // The original body, or (too large to go out whole with the
                // headers) its beginning, with Notify-Body-Truncated (§4, README).
                let letter = await waitFor(timeout: .seconds(10)) {
                    deadLetters.received.first {
                        $0.payload == body || ($0.headers["Notify-Body-Truncated"] == String(body.count) && body.starts(with: $0.payload))
                    }
                }
                let measured = letter.map {
                    let kept = $0.payload == body ? "body unchanged" : "body cut to its first \($0.payload.count) bytes, Notify-Body-Truncated=\(body.count)"
                    return "\($0.subject) Notify-Error=\($0.headers["Notify-Error"] ?? "-") Notify-Attempts=\($0.headers["Notify-Attempts"] ?? "-"), \(kept)"
                } ?? "no dead letter within 10 s" + lastError(worker, containing: "dead-lettering failed")
                checks.add("\(hostile.name) → dead-lettered, Notify-Error \(reason), Notify-Attempts 1", measured + note,
                           letter?.subject == "dlq." + subject && letter?.headers["Notify-Error"] == reason && letter?.headers["Notify-Attempts"] == "1")
            case .accepted(let username):
                let stored = await waitFor(timeout: .seconds(10)) { () -> StoredNotification? in
                    (try? await StoreInspector.snapshot(harness.databasePath))?.notifications.first { $0.actionKey == "1#POST#hr-rtl#t1" }
                }
                let storedName = stored?.attributes["username"]?.stringValue
                checks.add("\(hostile.name) → accepted and stored unchanged (§1 sets no character rule on username)",
                           stored == nil ? "not stored within 10 s" : "stored; username \(storedName == username ? "byte-identical" : "changed to \(storedName.map { $0.unicodeScalars.map { String($0.value, radix: 16) }.joined(separator: " ") } ?? "nothing")")",
                           storedName == username)
                required["h1", default: []].insert("1#POST#hr-rtl#t1")
            }
        }

        // The rejected kinds, 10,000 times, after a warm-up of as many: the
        // first thousands grow the allocator's arenas (measured: +15 MiB,
        // then flat within ±7 MiB over 50,000 more).
        let loop = cases(bigBody: 70 * 1_024).filter { if case .rejected = $0.expected { return true } else { return false } }
        let initialLetters = deadLetters.count
        let startRSS = worker.currentRSSKiB()
        let warmUp = 10_000
        let measuredCount = 10_000
        let rounds = 4
        try await publishCycling(loop, count: warmUp, harness: harness)
        _ = await waitFor(timeout: .seconds(60)) { deadLetters.count >= initialLetters + warmUp ? true : nil }
        try await Task.sleep(for: .seconds(1))
        // Then rounds of 10,000, RSS read after each: a leak grows it every
        // round (0.4 KiB an event would pass 16 MiB); the allocator's arenas
        // move up and down by several MiB but stay within a bound.
        var sizes = [worker.currentRSSKiB()]
        progress("after \(warmUp) warm-up events worker RSS \(sizes[0]) KiB (\(startRSS) KiB before them); \(rounds) rounds of \(measuredCount) hostile events")
        var complete = true
        for round in 1...rounds {
            try await publishCycling(loop, count: measuredCount, harness: harness)
            let expected = initialLetters + warmUp + round * measuredCount
            complete = await waitFor(timeout: .seconds(120)) { deadLetters.count >= expected ? true : nil } ?? false
            try await Task.sleep(for: .seconds(1))
            sizes.append(worker.currentRSSKiB())
            if !complete { break }
        }
        let total = sizes.last! - sizes[0]
        let highest = sizes.max()! - sizes[0]
        checks.add("\(rounds) × 10,000 hostile events after 10,000 to warm up: all dead-lettered, worker alive, RSS flat (never 16 MiB above its size after the warm-up)",
                   "\(deadLetters.count - initialLetters - warmUp)/\(rounds * measuredCount) dead letters\(complete ? "" : " (timed out)"); worker alive \(worker.isRunning); RSS KiB after each round \(sizes.map(String.init).joined(separator: " → ")) (\(total >= 0 ? "+" : "")\(total) KiB)",
                   complete && worker.isRunning && highest <= 16 * 1_024)
        let output = try WorkerCrashes.workerLogs(harness).joined()
        let rejectedLines = output.components(separatedBy: "event rejected").count - 1
        checks.add("rejections logged (at warning) without the payload", "\(rejectedLines) 'event rejected' lines; payload marker in the log \(output.components(separatedBy: marker).count - 1) times",
                   rejectedLines > 0 && !output.contains(marker))
        deadLetters.stop()
        let drained = await harness.waitUntilDrained(timeout: .seconds(20))
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        checks.checkStore(snapshot, required: required)
        checks.checkDrained(drained)
        worker.stop()
    }

    /// `; worker log: <error>` from the worker's last line containing `text`.
    static func lastError(_ worker: NotifyProcess, containing text: String) -> String {
        guard let line = worker.output.split(separator: "\n").last(where: { $0.contains(text) }),
              let range = line.range(of: "error=") else { return "" }
        return "; worker log: \(text): " + line[range.upperBound...].prefix(160)
    }

    static func publishCycling(_ cases: [Case], count: Int, harness: Harness) async throws {
        for index in 0..<count {
            _ = try await harness.jetStream.publish(subject, payload: cases[index % cases.count].body)
        }
    }
}

/// Polls `probe` every 50 ms until it returns a value or the timeout passes.
func waitFor<T>(timeout: Duration, _ probe: () async -> T?) async -> T? {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if let value = await probe() { return value }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return await probe()
}
