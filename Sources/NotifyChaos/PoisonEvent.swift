import Foundation
import NATS
import ProcessSupport

/// One event the store refuses every time (a trigger in the SQLite file
/// aborts any write to its owner's partition), among other users' steady
/// traffic: it is retried with backoff and dead-lettered once, after
/// NATS_MAX_DELIVER deliveries, and nobody else waits for it.
enum PoisonEvent {
    static let owner = "poison"

    static func run(_ harness: Harness, _ checks: inout Checks) async throws {
        let worker = try await harness.startNotify("worker", extra: ["NATS_MAX_DELIVER": "5"])
        _ = try StoreInspector.sqlite(harness.databasePath, """
            CREATE TRIGGER chaos_poison BEFORE INSERT ON \(StoreInspector.table) WHEN NEW.pk = 'U#\(owner)'
            BEGIN SELECT RAISE(ABORT, 'the chaos suite refuses this owner'); END;
            """, readOnly: false)
        let probe = LatencyProbe()
        let live = try harness.connection.subscribe("users.*.notifications") { message in probe.received(message.payload) }
        let deadLetters = try await SubjectRecorder(harness.connection, subject: "dlq.>")
        try await harness.connection.flush()

        progress("baseline: 200 events/s over 40 other owners for 10 s")
        let baseline = await probe.run(jetStream: harness.jetStream, prefix: "o", owners: 40, rate: 200, duration: .seconds(10))
        progress("the same load for 25 s, with one poison event for '\(owner)' 1 s in")
        let jetStream = harness.jetStream
        let load = Task { await probe.run(jetStream: jetStream, prefix: "o", owners: 40, rate: 200, duration: .seconds(25)) }
        try await Task.sleep(for: .seconds(1))
        let poison = ChaosEvent(kind: "post.like", owner: owner, trigger: "t1", resource: "poisoned", eventID: "poison-1")
        let published = ContinuousClock.now
        _ = try await harness.jetStream.publish(poison.subject, payload: poison.body)
        let letter = await waitFor(timeout: .seconds(60)) { deadLetters.received.first { $0.payload == poison.body } }
        let after = seconds(ContinuousClock.now - published)
        let during = await load.value
        let drained = await harness.waitUntilDrained(timeout: .seconds(20))
        try await Task.sleep(for: .seconds(1))
        live.unsubscribe()
        deadLetters.stop()

        let failures = worker.output.components(separatedBy: "storing a batch failed").count - 1
        checks.add("the fault took effect: every write for the poison event's owner fails",
                   "\(failures) 'storing a batch failed' log lines; the trigger's message in the log: \(worker.output.contains("the chaos suite refuses this owner"))",
                   failures >= 5 && worker.output.contains("the chaos suite refuses this owner"))
        let letters = deadLetters.received.filter { $0.payload == poison.body }
        let others = deadLetters.received.count - letters.count
        checks.add("exactly one dead letter, after NATS_MAX_DELIVER (5) deliveries: Notify-Error store_failed, Notify-Attempts 5, body unchanged; nothing else dead-lettered",
                   "\(letters.count) dead letter(s) for it\(letter.map { " on \($0.subject), Notify-Error=\($0.headers["Notify-Error"] ?? "-") Notify-Attempts=\($0.headers["Notify-Attempts"] ?? "-"), \(String(format: "%.1f", after)) s after its publish" } ?? " within 60 s"); \(others) other dead letters",
                   letters.count == 1 && letter?.subject == "dlq." + poison.subject && letter?.headers["Notify-Error"] == "store_failed"
                       && letter?.headers["Notify-Attempts"] == "5" && others == 0)

        let before = probe.latencies(baseline.map(\.key))
        let with = probe.latencies(during.map(\.key))
        let (p99Before, p99With) = (percentile(before, 0.99), percentile(with, 0.99))
        checks.add("other users' latency unaffected: publish → per-user message p99 while the poison event is retried ≤ 2 × baseline p99 + 2 ms, every one delivered",
                   "baseline \(latencySummary(before, of: baseline.count)); with the poison event \(latencySummary(with, of: during.count))",
                   before.count == baseline.count && with.count == during.count && p99With <= 2 * p99Before + 2)

        var required: [String: Set<String>] = [:]
        for sent in baseline + during where sent.acknowledged { required[sent.owner, default: []].insert(sent.actionKey) }
        let allowed = (baseline + during).filter { !$0.acknowledged }.reduce(into: [String: Set<String>]()) { $0[$1.owner, default: []].insert($1.actionKey) }
        checks.checkStore(try await StoreInspector.snapshot(harness.databasePath), required: required, allowed: allowed)
        checks.checkDrained(drained)
        checks.add("worker still serving", "alive \(worker.isRunning)", worker.isRunning)
        worker.stop()
    }
}
