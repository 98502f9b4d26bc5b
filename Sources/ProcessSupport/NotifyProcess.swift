public import Foundation

/// The release `notify` executable (found next to the running one) as a
/// child process: `worker`, `gateway` or `serve`, its output in a log file.
/// Reports what `/proc` says about it: memory, CPU time, open files.
public struct NotifyProcess: Sendable {
    public let process: Process
    /// stdout and stderr of the process.
    public let log: String

    public var pid: pid_t { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// `notify` in the directory of the running executable.
    public static func executable() throws(ProcessSupportError) -> String {
        let path = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("notify").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw ProcessSupportError("\(path) is missing: build it with `swift build -c release --product notify`")
        }
        return path
    }

    /// Starts `notify <command>` (words separated by spaces, such as
    /// `store create-table`) with this process's environment plus
    /// `environment`, writing its output to `log` (truncated first).
    public static func start(command: String, environment: [String: String], log: String) throws(ProcessSupportError) -> NotifyProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try executable())
        process.arguments = command.split(separator: " ").map(String.init)
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        try run(process, log: log, name: "notify \(command)")
        return NotifyProcess(process: process, log: log)
    }

    /// `notify <command>` against `url`, with its store in `directory`/data
    /// and its log in `directory`/`log`.
    public static func start(
        url: String, directory: String, synchronous: String, batchSize: Int, command: String = "worker", extra: [String: String] = [:],
        log: String = "worker.log"
    ) throws(ProcessSupportError) -> NotifyProcess {
        var environment = [
            "NATS_URL": url, "DATA_DIR": directory + "/data", "SQLITE_SYNCHRONOUS": synchronous,
            "WORKER_BATCH_SIZE": String(batchSize), "LOG_LEVEL": "info", "ENVIRONMENT": "development",
        ]
        environment.merge(extra) { _, new in new }
        return try start(command: command, environment: environment, log: directory + "/" + log)
    }

    /// Everything the process has written so far.
    public var output: String {
        (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    }

    /// Waits until the output contains `text`; throws, with the output, when
    /// the process exits first or the timeout passes.
    public func waitForOutput(containing text: String, timeout: Duration = .seconds(10)) async throws(ProcessSupportError) {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if output.contains(text) { return }
            if !process.isRunning { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        throw ProcessSupportError("notify (pid \(pid)) did not log '\(text)'\(process.isRunning ? " within \(timeout)" : " before it exited"); its output:\n\(output.suffix(4_000))")
    }

    /// Waits for the worker's "worker running" line.
    public func waitUntilRunning() async throws(ProcessSupportError) {
        try await waitForOutput(containing: "worker running")
    }

    /// The gateway's port, from its "gateway listening" line (text or JSON logs).
    public func waitForPort() async throws(ProcessSupportError) -> Int {
        try await waitForOutput(containing: "gateway listening")
        for line in output.split(separator: "\n") where line.contains("gateway listening") {
            for marker in ["port=", #""port":""#, #""port":"#] {
                if let range = line.range(of: marker), let port = Int(line[range.upperBound...].prefix { $0.isNumber }) {
                    return port
                }
            }
        }
        throw ProcessSupportError("cannot read the port from the gateway's log:\n\(output.suffix(2_000))")
    }

    /// Sends `signal` (SIGKILL, SIGSTOP, SIGCONT, …).
    public func signal(_ signal: Int32) {
        sendSignal(signal, to: process)
    }

    /// Waits until the process has exited; `false` on timeout.
    public func waitForExit(timeout: Duration = .seconds(10)) async -> Bool {
        await waitUntilExited(process, timeout: timeout)
    }

    /// VmRSS of the process now, in KiB.
    public func currentRSSKiB() -> Int {
        Int(statusField("VmRSS:") ?? 0)
    }

    /// VmHWM (peak RSS) of the process, in MiB.
    public func peakRSSMiB() -> Double {
        ((statusField("VmHWM:") ?? 0) / 1024 * 10).rounded() / 10
    }

    private func statusField(_ name: String) -> Double? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) })
        else { return nil }
        return Double(line.split(separator: " ").dropFirst().first ?? "")
    }

    /// User plus system CPU time so far, in seconds (`/proc/<pid>/stat`).
    public func cpuSeconds() -> Double? { processCPUSeconds(pid) }

    /// Open file descriptors (`/proc/<pid>/fd`).
    public func openFileCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }

    /// SIGTERM, and waits for the exit (SIGKILL after 10 s).
    public func stop() {
        stopProcess(process)
    }
}

/// User plus system CPU time of `pid` so far, in seconds (`/proc/<pid>/stat`).
func processCPUSeconds(_ pid: pid_t) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let end = stat.lastIndex(of: ")")
    else { return nil }
    // After "pid (comm)": state is field 3; utime and stime are 14 and 15.
    let fields = stat[stat.index(after: end)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Starts `process` with its stdout and stderr in `log` (truncated first).
func run(_ process: Process, log: String, name: String) throws(ProcessSupportError) {
    _ = FileManager.default.createFile(atPath: log, contents: nil)
    do {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    } catch {
        throw ProcessSupportError("cannot start \(name): \(error)")
    }
}

/// SIGTERM, then SIGKILL if the process is still there after `grace`;
/// returns once it has exited. Polls with a sleep: Foundation's
/// `waitUntilExit()` spins a CPU while it waits off the main thread.
func stopProcess(_ process: Process, grace: Duration = .seconds(10)) {
    guard process.isRunning else { return }
    process.terminate()
    let deadline = ContinuousClock.now + grace
    while process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    while process.isRunning { usleep(10_000) }
}

func sendSignal(_ signal: Int32, to process: Process) {
    guard process.isRunning else { return }
    kill(process.processIdentifier, signal)
}

func waitUntilExited(_ process: Process, timeout: Duration) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
        if ContinuousClock.now >= deadline { return false }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return true
}

/// A child process did not start or behave; the message says what to do.
public struct ProcessSupportError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
