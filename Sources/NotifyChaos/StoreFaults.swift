import Foundation
import NATS
import ProcessSupport

/// Faults of the SQLite file under a running worker: another process
/// holding its write lock, pages overwritten, a torn WAL tail.
enum StoreFaults {
    /// `sqlite3` holding a transaction on the database until released:
    /// `BEGIN EXCLUSIVE` (the write lock), or a read that pins a snapshot.
    struct LockHolder {
        let process: Process
        let input: Pipe

        static func acquire(_ path: String, output: String, begin: String = "BEGIN EXCLUSIVE;") async throws -> LockHolder {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
            process.arguments = [path]
            let input = Pipe()
            process.standardInput = input
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            input.fileHandleForWriting.write(Data(".timeout 20000\n\(begin)\nSELECT 'lock-' || 'held';\n".utf8))
            let held = await waitFor(timeout: .seconds(25)) {
                ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").contains("lock-held") ? true : nil
            }
            guard held == true else {
                process.terminate()
                throw ChaosError("sqlite3 could not take the write lock: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
            }
            return LockHolder(process: process, input: input)
        }

        func release() {
            input.fileHandleForWriting.write(Data("COMMIT;\n.quit\n".utf8))
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
    }

    /// `sqlite3` holds the write lock for 30 s while events keep coming.
    static func locked(_ harness: Harness, _ checks: inout Checks) async throws {
        let worker = try await harness.startNotify("worker")
        let gateway = try await harness.startNotify("gateway")
        let port = try await gateway.waitForPort()
        let deadLetters = try await SubjectRecorder(harness.connection, subject: "dlq.>")
        let load = BackgroundLoad(count: 6_000, jetStream: harness.jetStream)
        let (events, log, publisher) = (load.events, load.log, load.publisher)
        try await Task.sleep(for: .seconds(3))
        let lock = try await LockHolder.acquire(harness.databasePath, output: harness.directory + "/sqlite3-lock.log")
        let lockedAt = ContinuousClock.now
        let cpuBefore = worker.cpuSeconds() ?? 0
        progress("sqlite3 holds BEGIN EXCLUSIVE for 30 s")
        // Reads through the gateway while the write lock is held.
        var reads: [String] = []
        var readsServed = true
        for _ in 0..<10 {
            try await Task.sleep(for: .seconds(2))
            let started = ContinuousClock.now
            let reply = try? await HTTPProbe.request(port: port, path: "/v1/notifications?limit=100", headers: [("Authorization", "Bearer \(Tokens.valid(user: "u1"))")])
            let items = (reply?.json?["items"] as? [Any])?.count ?? 0
            readsServed = readsServed && reply?.status == 200 && items > 0
            reads.append(String(format: "%@ (%d items) in %.1f ms", reply.map { String($0.status) } ?? "no answer", items, seconds(ContinuousClock.now - started) * 1_000))
        }
        try await Task.sleep(until: lockedAt + .seconds(29), clock: .continuous)
        let during = await harness.consumerInfo()
        try await Task.sleep(until: lockedAt + .seconds(30), clock: .continuous)
        let cpu = ((worker.cpuSeconds() ?? 0) - cpuBefore) / seconds(ContinuousClock.now - lockedAt) * 100
        lock.release()
        let released = ContinuousClock.now
        await publisher.value
        let drained = await harness.waitUntilDrained()
        let catchUp = seconds(ContinuousClock.now - released)
        deadLetters.stop()
        writeEventLog(events, log, to: harness.directory)
        let held = worker.output.components(separatedBy: "the store is unavailable").count - 1
        checks.add("the fault took effect: the worker's writes were refused while the lock was held",
                   "\(held) 'store is unavailable' log lines; 29 s into the lock \(during?.numAckPending ?? -1) deliveries unacked, \(during?.numPending ?? 0) waiting",
                   held > 0)
        checks.add("no event dead-lettered or lost for a locked store; worker alive; CPU while locked < 5% of a core",
                   "\(deadLetters.count) dead letters\(sample(deadLetters.received.map { $0.headers["Notify-Error"] ?? "?" }, 1)); worker alive \(worker.isRunning); CPU \(String(format: "%.2f", cpu))%; drained \(String(format: "%.1f", catchUp)) s after the lock went",
                   deadLetters.count == 0 && worker.isRunning && cpu < 5)
        checks.add("reads keep working while the lock is held: GET /v1/notifications every 2 s answers 200 with the feed",
                   "\(reads.count) reads: " + reads.joined(separator: ", "), readsServed && reads.count == 10)
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        checks.checkStore(snapshot, expected: Oracle.expected(events, acknowledged: log.acknowledged))
        checks.checkDrained(drained)
        gateway.stop()
        worker.stop()
    }

    /// Every page after the first overwritten while the worker is stopped;
    /// it is started on the damaged file, events are published, then the
    /// operator moves the file aside and starts it on a fresh one.
    static func corrupt(_ harness: Harness, _ checks: inout Checks) async throws {
        var worker = try await harness.startNotify("worker")
        var mix = EventMix(owners: 20)
        let before = (0..<300).map { _ in mix.next() }
        for (index, event) in before.enumerated() { await publish(event, index: index, jetStream: harness.jetStream, log: PublishLog()) }
        _ = await harness.waitUntilDrained(timeout: .seconds(20))
        worker.stop()

        let path = harness.databasePath
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        let file = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try file.seek(toOffset: 4_096)
        try file.write(contentsOf: (0..<max(size - 4_096, 0)).map { _ in UInt8.random(in: 0...255) })
        try file.close()
        let integrity: String
        do { integrity = try StoreInspector.sqlite(path, "PRAGMA quick_check").prefix(2).joined(separator: "; ") } catch { integrity = "\(error)" }
        progress("overwrote \(size - 4_096) bytes of \(path) (pages 2…); quick_check: \(integrity.prefix(120))")

        // Events published onto the damaged store.
        let deadLetters = try await SubjectRecorder(harness.connection, subject: "dlq.>")
        let events = (0..<200).map { _ in mix.next() }
        let log = PublishLog()
        let damaged = try await harness.startNotify("worker", wait: false)
        for (index, event) in events.enumerated() { await publish(event, index: index, jetStream: harness.jetStream, log: log) }
        try await Task.sleep(for: .seconds(8))
        let info = await harness.consumerInfo()
        let exited = !damaged.isRunning
        let status = exited ? damaged.process.terminationStatus : 0
        let lastLine = damaged.output.split(separator: "\n").last.map(String.init) ?? ""
        let unsettled = Int(info?.numPending ?? 0) + Int(info?.numAckPending ?? 0)
        checks.add("on a damaged store the worker acknowledges nothing it could not store: it holds the events, or refuses to start with one line naming the store",
                   (exited ? "worker exited with status \(status): \(lastLine.prefix(200))" : "worker running; \(damaged.output.components(separatedBy: "the store is unavailable").count - 1) 'store is unavailable' lines")
                       + "; \(unsettled)/\(events.count) events still unacknowledged after 8 s; \(deadLetters.count) dead letters",
                   unsettled == events.count && deadLetters.count == 0 && (!exited || status != 0))
        damaged.signal(SIGTERM)
        if !(await damaged.waitForExit(timeout: .seconds(15))) { damaged.signal(SIGKILL) }

        // The operator's repair: the damaged file aside, a fresh store.
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
            try FileManager.default.moveItem(atPath: path + suffix, toPath: path + suffix + ".damaged")
        }
        worker = try await harness.startNotify("worker")
        let drained = await harness.waitUntilDrained()
        deadLetters.stop()
        let snapshot = try await StoreInspector.snapshot(path)
        checks.checkStore(snapshot, expected: Oracle.expected(events, acknowledged: log.acknowledged))
        checks.checkDrained(drained)
        worker.stop()
    }

    /// The WAL cut mid-frame after a crash, as a disk that lost the tail of
    /// its writes leaves it. A reader pins a snapshot so the checkpointer
    /// cannot move the last commits into the database file; then reader and
    /// worker are SIGKILLed and the WAL is truncated inside a frame 60% in.
    /// The worker must start on it, and the store must hold exactly the
    /// effect of the first S acknowledged events for some S (the last
    /// complete commit), consistent, and take new events.
    static func truncatedWAL(_ harness: Harness, _ checks: inout Checks) async throws {
        let path = harness.databasePath
        var worker = try await harness.startNotify("worker")
        let pageSize = Int(try StoreInspector.sqlite(path, "PRAGMA page_size").first ?? "") ?? 4_096
        let reader = try await LockHolder.acquire(path, output: harness.directory + "/sqlite3-reader.log",
                                                  begin: "BEGIN; SELECT count(*) FROM \(StoreInspector.table);")
        var mix = EventMix(owners: 20)
        let events = (0..<2_000).map { _ in mix.next() }
        let log = PublishLog()
        await publishInBursts(events, jetStream: harness.jetStream, log: log, burst: 40, interval: .milliseconds(100))
        _ = await harness.waitUntilDrained(timeout: .seconds(30))
        kill(reader.process.processIdentifier, SIGKILL)
        worker.signal(SIGKILL)
        _ = await worker.waitForExit()
        reader.process.waitUntilExit()

        let walPath = path + "-wal"
        let walSize = (try FileManager.default.attributesOfItem(atPath: walPath)[.size] as? Int) ?? 0
        let frameSize = 24 + pageSize
        let frames = max(walSize - 32, 0) / frameSize
        let cut = 32 + (frames * 6 / 10) * frameSize + 24 + pageSize / 2
        guard frames > 10 else { throw ChaosError("the WAL holds \(frames) frames; the reader did not hold back the checkpoint") }
        let wal = try FileHandle(forWritingTo: URL(fileURLWithPath: walPath))
        try wal.truncate(atOffset: UInt64(cut))
        try wal.close()
        progress("WAL of \(walSize) bytes (\(frames) frames of \(pageSize)-byte pages) cut to \(cut) bytes, inside frame \(frames * 6 / 10 + 1)")

        worker = try await harness.startNotify("worker")
        let recovered = try await StoreInspector.snapshot(path)
        let stored = recovered.actionKeys
        let acknowledged = log.acknowledged.sorted { $0.sequence < $1.sequence }
        var oracle = Oracle()
        var prefix: Int? = oracle.live.filter { !$0.value.isEmpty } == stored ? 0 : nil
        for (position, entry) in acknowledged.enumerated() {
            oracle.apply(events[entry.index])
            if oracle.live.filter({ !$0.value.isEmpty }) == stored { prefix = position + 1 }
        }
        checks.add("the worker starts on the truncated WAL; the store is intact and consistent (integrity_check, pointers, counters)",
                   "worker running \(worker.isRunning); integrity_check \(recovered.integrity); \(recovered.inconsistencies.count) inconsistencies\(sample(recovered.inconsistencies, 2)); \(recovered.duplicates.count) duplicates",
                   worker.isRunning && recovered.integrity == "ok" && recovered.inconsistencies.isEmpty && recovered.duplicates.isEmpty)
        checks.add("recovers to the last complete commit: the store holds exactly the effect of the first S acked events (stream order); the torn tail is gone whole",
                   prefix.map { "S = \($0) of \(acknowledged.count) acked events; the \(acknowledged.count - $0) after it went with the WAL tail (the fault: a disk that lost writes SQLite had synced)" }
                       ?? "the stored state (\(stored.values.reduce(0) { $0 + $1.count }) notifications) is no prefix of the acked events",
                   prefix != nil && prefix! < acknowledged.count)

        // New events after recovery are stored on top.
        var later = EventMix(owners: 10, prefix: "w")
        let after = (0..<300).map { _ in later.next() }
        let afterLog = PublishLog()
        await publishInBursts(after, jetStream: harness.jetStream, log: afterLog, burst: 30, interval: .milliseconds(100))
        let drained = await harness.waitUntilDrained()
        var expected = Oracle.expected(after, acknowledged: afterLog.acknowledged)
        expected.required.merge(stored) { new, _ in new }
        checks.checkStore(try await StoreInspector.snapshot(path), expected: expected)
        checks.checkDrained(drained)
        worker.stop()
    }
}
