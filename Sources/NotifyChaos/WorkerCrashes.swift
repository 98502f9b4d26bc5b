import Foundation
import NATS
import ProcessSupport

/// Faults of the worker process: killed, or frozen past its AckWait.
enum WorkerCrashes {
    /// 10,000 events (10% duplicates) published in bursts while the worker
    /// is SIGKILLed 20 times at random moments and restarted each time.
    static func sigkill(_ harness: Harness, _ checks: inout Checks) async throws {
        let kills = 20
        // A short AckWait, so what a killed worker held is redelivered soon;
        // debug logs name each event's outcome, to explain a failure.
        let settings = ["NATS_ACK_WAIT": "5s", "LOG_LEVEL": "debug"]
        var worker = try await harness.startNotify("worker", extra: settings)
        let users = try await SubjectRecorder(harness.connection, subject: "users.*.notifications")
        var mix = EventMix(owners: 100)
        let events = (0..<10_000).map { _ in mix.next() }
        let log = PublishLog()
        let jetStream = harness.jetStream
        progress("publishing \(events.count) events in bursts of 100 every 200 ms; SIGKILL the worker \(kills) times")
        let publisher = Task { await publishInBursts(events, jetStream: jetStream, log: log, burst: 100, interval: .milliseconds(200)) }

        // Odd kills land at random moments. Even ones are aimed at a moment
        // with deliveries unacknowledged: the worker is frozen (SIGSTOP),
        // the consumer asked, and thawed to try again 20 ms later if it
        // held nothing, up to 50 times.
        var killedInFlight = 0
        for kill in 1...kills {
            await sleepRandom(0.2...1.2)
            var inFlight = false
            for _ in 0..<(kill % 2 == 0 ? 50 : 1) {
                worker.signal(SIGSTOP)
                if let info = await harness.consumerInfo(), info.numAckPending > 0 {
                    inFlight = true
                    break
                }
                worker.signal(SIGCONT)
                try? await Task.sleep(for: .milliseconds(20))
            }
            if inFlight { killedInFlight += 1 }
            worker.signal(SIGKILL)
            guard await worker.waitForExit() else { throw ChaosError("the worker did not die on SIGKILL") }
            worker = try await harness.startNotify("worker", extra: settings)
            if kill % 5 == 0 { progress("\(kill) kills, \(log.acknowledged.count) events acked so far") }
        }
        await publisher.value
        let drained = await harness.waitUntilDrained()
        try await Task.sleep(for: .seconds(1))  // the last per-user messages reach the subscriber
        users.stop()

        let acknowledged = log.acknowledged
        writeEventLog(events, log, to: harness.directory)
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        let recovered = try workerLogs(harness).reduce(0) { $0 + $1.components(separatedBy: "published an outbox left from before").count - 1 }
        let redeliveries = await redeliveryCount(harness)
        checks.add("the fault took effect: kills land while events are unacknowledged",
                   "\(kills) SIGKILLs (half aimed at a moment with deliveries unacked), \(killedInFlight) with deliveries unacked; \(redeliveries) redeliveries; \(recovered) outboxes published again at start-up",
                   killedInFlight > 0)
        checks.add("every publish acknowledged by JetStream", "\(acknowledged.count)/\(events.count) acked, \(log.failed.count) failed \(log.lastError ?? "")",
                   acknowledged.count == events.count)
        checks.checkStore(snapshot, expected: Oracle.expected(events, acknowledged: acknowledged))
        checks.checkPublished(snapshot, UserMessageTally(users.received), dropped: users.dropped)
        checks.checkDrained(drained)
        worker.stop()
    }

    /// The worker SIGSTOPped for twice its AckWait with events in flight,
    /// so JetStream redelivers them, then SIGCONTed so it commits and acks
    /// late: three rounds alone, then two with a second worker taking the
    /// redeliveries while the first is frozen.
    static func sigstop(_ harness: Harness, _ checks: inout Checks) async throws {
        let settings = ["NATS_ACK_WAIT": "2s", "WORKER_BATCH_SIZE": "256", "LOG_LEVEL": "debug"]
        let first = try await harness.startNotify("worker", extra: settings)
        var second: NotifyProcess?
        var mix = EventMix(owners: 50)
        let events = (0..<7_500).map { _ in mix.next() }
        let log = PublishLog()
        var unackedWhileStopped: [Int64] = []
        for round in 1...5 {
            if round == 4 { second = try await harness.startNotify("worker", extra: settings) }
            let range = (round - 1) * 1_500..<round * 1_500
            let jetStream = harness.jetStream
            let burst = Task {
                for index in range { await publish(events[index], index: index, jetStream: jetStream, log: log) }
            }
            await sleepRandom(0.03...0.15)
            first.signal(SIGSTOP)
            try await Task.sleep(for: .seconds(3.5))
            let info = await harness.consumerInfo()
            unackedWhileStopped.append(info?.numAckPending ?? 0)
            try await Task.sleep(for: .seconds(0.5))
            first.signal(SIGCONT)
            await burst.value
            progress("round \(round)\(second == nil ? "" : " (second worker running)"): stopped 4 s; \(info?.numAckPending ?? -1) deliveries unacked after 3.5 s")
            try await Task.sleep(for: .seconds(1))
        }
        let drained = await harness.waitUntilDrained()
        writeEventLog(events, log, to: harness.directory)
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        let redeliveries = await redeliveryCount(harness)
        checks.add("the fault took effect: events redelivered after AckWait while the worker was stopped",
                   "deliveries unacked 3.5 s into each stop: \(unackedWhileStopped.map(String.init).joined(separator: ", ")); \(redeliveries) redeliveries in all",
                   redeliveries > 0)
        checks.add("both workers survive the freeze", "first running: \(first.isRunning), second running: \(second?.isRunning ?? false)",
                   first.isRunning && second?.isRunning == true)
        checks.checkStore(snapshot, expected: Oracle.expected(events, acknowledged: log.acknowledged))
        checks.checkDrained(drained)
        first.stop()
        second?.stop()
    }

    /// The worker's own crash hook (`NOTIFY_TEST_CRASH_POINT`): it SIGKILLs
    /// itself right after a batch commits (before publishing) or right after
    /// publishing (before acking), three times at each point, then a normal
    /// worker finishes the work.
    static func crashPoints(_ harness: Harness, _ checks: inout Checks) async throws {
        let settings = ["NATS_ACK_WAIT": "3s", "WORKER_BATCH_SIZE": "64"]
        let setup = try await harness.startNotify("worker", extra: settings)  // creates the stream and the consumer
        setup.stop()
        let users = try await SubjectRecorder(harness.connection, subject: "users.*.notifications")
        var mix = EventMix(owners: 30)
        let events = (0..<1_800).map { _ in mix.next() }
        let log = PublishLog()
        var crashes: [String] = []
        for (round, point) in ["after-commit", "after-publish"].enumerated() {
            for index in round * 900..<(round + 1) * 900 { await publish(events[index], index: index, jetStream: harness.jetStream, log: log) }
            for _ in 1...3 {
                let worker = try await harness.startNotify("worker", extra: settings.merging(["NOTIFY_TEST_CRASH_POINT": point]) { _, new in new }, wait: false)
                let died = await worker.waitForExit(timeout: .seconds(20))
                crashes.append("\(point): \(died ? (worker.output.contains("crashing on purpose") ? "crashed" : "exited \(worker.process.terminationStatus)") : "did not crash")")
                if !died { worker.signal(SIGKILL) }
            }
        }
        let worker = try await harness.startNotify("worker", extra: settings)
        let drained = await harness.waitUntilDrained()
        try await Task.sleep(for: .seconds(1))
        users.stop()
        writeEventLog(events, log, to: harness.directory)
        let recovered = try workerLogs(harness).reduce(0) { $0 + $1.components(separatedBy: "published an outbox left from before").count - 1 }
        checks.add("the fault took effect: the worker died at the crash point each time",
                   crashes.joined(separator: ", ") + "; \(recovered) outboxes published again at start-up",
                   crashes.allSatisfy { $0.hasSuffix("crashed") })
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        checks.checkStore(snapshot, expected: Oracle.expected(events, acknowledged: log.acknowledged))
        checks.checkPublished(snapshot, UserMessageTally(users.received), dropped: users.dropped)
        checks.checkDrained(drained)
        worker.stop()
    }

    /// A worker dies holding a create (it fetched it and never acked);
    /// the retraction published after it reaches a live worker first, and
    /// the create is redelivered after AckWait. The suite itself plays the
    /// dying worker: it fetches the create from the durable consumer and
    /// walks away, so the order is the same on every run.
    static func redeliveryOrder(_ harness: Harness, _ checks: inout Checks) async throws {
        let settings = ["NATS_ACK_WAIT": "3s", "LOG_LEVEL": "debug"]
        let setup = try await harness.startNotify("worker", extra: settings)  // creates the stream and the consumer
        setup.stop()
        let follow = ChaosEvent(kind: "user.follow", owner: "o1", trigger: "fan1", resource: "o1", eventID: "follow-1")
        let unfollow = ChaosEvent(kind: "user.unfollow", owner: "o1", trigger: "fan1", resource: "o1", eventID: "unfollow-1")
        let log = PublishLog()
        await publish(follow, index: 0, jetStream: harness.jetStream, log: log)
        let dying = try await harness.jetStream.pullSubscribe(stream: Harness.stream, consumer: Harness.consumer)
        let taken = try await dying.fetch(maxMessages: 1, maxWait: .seconds(2))
        dying.close()
        await publish(unfollow, index: 1, jetStream: harness.jetStream, log: log)
        let worker = try await harness.startNotify("worker", extra: settings)
        let drained = await harness.waitUntilDrained(timeout: .seconds(20))
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        let outcomes = worker.output.split(separator: "\n").filter { $0.contains("event applied") }.map { line in
            (line.range(of: "event_id=").map { line[$0.upperBound...].prefix { $0 != " " } } ?? "?") + " → "
                + (line.range(of: "outcome=").map { line[$0.upperBound...].prefix { $0 != " " && $0 != "(" } } ?? "?")
        }
        checks.add("the fault took effect: a fetched, unacked create is redelivered after the later retraction",
                   "fetched \(taken.map { $0.subject }.joined()) and dropped it; live worker applied, in order: \(outcomes.joined(separator: ", "))",
                   taken.count == 1 && log.acknowledged.count == 2)
        let stored = snapshot.notifications.map(\.actionKey)
        checks.add("follow then unfollow leaves no notification, whatever the delivery order",
                   stored.isEmpty ? "nothing stored" : "stored: \(stored.joined(separator: ", ")) (the unfollow was consumed first and found nothing; the redelivered follow then created it)",
                   stored.isEmpty)
        checks.checkDrained(drained)
        worker.stop()
    }

    /// Deliveries beyond one per stream message.
    static func redeliveryCount(_ harness: Harness) async -> Int {
        guard let info = await harness.consumerInfo(),
              let stream = try? await harness.jetStream.streamInfo(Harness.stream) else { return -1 }
        return Int(info.deliveredConsumerSequence) - Int(stream.lastSequence)
    }

    /// The text of every worker log of the scenario.
    static func workerLogs(_ harness: Harness) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: harness.directory)
            .filter { $0.hasPrefix("worker-") && $0.hasSuffix(".log") }
            .map { try String(contentsOfFile: harness.directory + "/" + $0, encoding: .utf8) }
    }
}
