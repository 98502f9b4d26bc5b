import Foundation
import NATS
import ProcessSupport

/// `DATA_DIR` on a small tmpfs filled up under load, then freed.
enum DiskFull {
    static let size = 24 * 1_024 * 1_024

    static func run(_ harness: Harness, _ checks: inout Checks) async throws {
        let data = harness.dataDirectory
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        guard try command("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", data]) else {
            checks.add("DATA_DIR on a 24 MiB tmpfs", "mount failed: the fault needs root (mount -t tmpfs)", false)
            return
        }
        defer { _ = try? command("/bin/umount", ["-l", data]) }

        let service = try await harness.startNotify("serve")
        let port = try await service.waitForPort()
        let deadLetters = try await SubjectRecorder(harness.connection, subject: "dlq.>")
        let load = BackgroundLoad(count: 4_000, jetStream: harness.jetStream)
        let (events, log, publisher) = (load.events, load.log, load.publisher)
        try await Task.sleep(for: .seconds(3))

        // Fill what is left, in 256 KiB writes, until the filesystem refuses.
        let filler = data + "/filler"
        let written = fill(filler)
        let filledAt = ContinuousClock.now
        progress("filled DATA_DIR: \(written / 1_024) KiB of filler; holding the disk full for 20 s")
        let refused = await waitFor(timeout: .seconds(15)) {
            service.output.contains("the store is unavailable") ? true : nil
        } ?? false
        let healthFull = (try? await HTTPProbe.request(port: port, path: "/health").status).map(String.init) ?? "no answer"
        let cpuBefore = service.cpuSeconds() ?? 0
        let cpuFrom = ContinuousClock.now
        try await Task.sleep(until: filledAt + .seconds(20), clock: .continuous)
        let cpu = ((service.cpuSeconds() ?? 0) - cpuBefore) / seconds(ContinuousClock.now - cpuFrom) * 100
        let during = await harness.consumerInfo()

        try FileManager.default.removeItem(atPath: filler)
        let freed = ContinuousClock.now
        progress("filler removed")
        await publisher.value
        let drained = await harness.waitUntilDrained()
        let catchUp = seconds(ContinuousClock.now - freed)
        var healthAfter = "no answer"
        for _ in 0..<50 {
            healthAfter = (try? await HTTPProbe.request(port: port, path: "/health").status).map(String.init) ?? "no answer"
            if healthAfter == "200" { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        deadLetters.stop()
        writeEventLog(events, log, to: harness.directory)

        checks.add("the fault took effect: writes refused (SQLITE_FULL) once the filesystem was full",
                   "\(written / 1_024) KiB of filler; 'store is unavailable' logged: \(refused); \(during?.numAckPending ?? -1) deliveries held unacked, \(during?.numPending ?? 0) waiting at the end of the outage",
                   refused)
        checks.add("while full: nothing acknowledged that is not stored, /health 503, a clear log line, CPU < 5% of a core",
                   "/health \(healthFull); log: \(clearLine(service.output)); CPU \(String(format: "%.2f", cpu))%",
                   healthFull == "503" && cpu < 5)
        checks.add("once space returns: everything lands once, nothing dead-lettered, /health 200",
                   "\(deadLetters.count) dead letters; drained \(String(format: "%.1f", catchUp)) s after the space came back; /health \(healthAfter); process alive \(service.isRunning)",
                   deadLetters.count == 0 && drained.isDrained && healthAfter == "200" && service.isRunning)
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        checks.checkStore(snapshot, expected: Oracle.expected(events, acknowledged: log.acknowledged))
        checks.checkDrained(drained)
        service.stop()
    }

    /// Writes zeros to `path` until the filesystem is full; the bytes written.
    static func fill(_ path: String) -> Int {
        guard let file = fopen(path, "w") else { return 0 }
        defer { fclose(file) }
        let chunk = [UInt8](repeating: 0, count: 256 * 1_024)
        var total = 0
        while true {
            let written = chunk.withUnsafeBytes { fwrite($0.baseAddress, 1, chunk.count, file) }
            total += written
            if written < chunk.count || fflush(file) != 0 { return total }
        }
    }

    /// The worker's "store is unavailable" line, shortened.
    static func clearLine(_ output: String) -> String {
        guard let line = output.split(separator: "\n").first(where: { $0.contains("the store is unavailable") }) else { return "none" }
        return String(line.drop { $0 != " " }.prefix(220)).trimmingCharacters(in: .whitespaces)
    }

    static func command(_ path: String, _ arguments: [String]) throws -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}
