public import Foundation

/// A `nats-server -js` child process on 127.0.0.1, storing its JetStream
/// data under a directory of the caller's. Can be signalled (to simulate
/// crashes and stalls) and restarted on the same port with the same data.
public struct NATSServerProcess: Sendable {
    public let process: Process
    public let port: Int
    /// Holds `jetstream/` and the server's logs.
    public let directory: String
    /// This incarnation's log file.
    public let log: String

    /// `nats://127.0.0.1:<port>`.
    public var url: String { "nats://127.0.0.1:\(port)" }
    public var pid: pid_t { process.processIdentifier }

    /// Starts a server; `port` `nil` lets it pick a free one. Returns once
    /// it listens.
    public static func start(directory: String, port: Int? = nil, logName: String = "nats.log") async throws(ProcessSupportError) -> NATSServerProcess {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin"]
        guard let executable = path.map({ $0 + "/nats-server" }).first(where: FileManager.default.isExecutableFile(atPath:)) else {
            throw ProcessSupportError("nats-server is not installed (apt-get install nats-server)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let log = directory + "/" + logName
        try? FileManager.default.removeItem(atPath: log)
        process.arguments = ["-js", "-a", "127.0.0.1", "-p", port.map(String.init) ?? "-1", "-sd", directory + "/jetstream", "-l", log]
        do { try process.run() } catch { throw ProcessSupportError("cannot start \(executable): \(error)") }
        for _ in 0..<400 {
            if let text = try? String(contentsOfFile: log, encoding: .utf8), text.contains("Server is ready"),
               let line = text.split(separator: "\n").first(where: { $0.contains("Listening for client connections on") }),
               let found = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) {
                return NATSServerProcess(process: process, port: found, directory: directory, log: log)
            }
            if !process.isRunning { break }
            try? await Task.sleep(for: .milliseconds(25))
        }
        if process.isRunning { process.terminate() }
        throw ProcessSupportError("nats-server did not start on port \(port.map(String.init) ?? "(any)"); see \(log)")
    }

    /// A new server on the same port with the same JetStream data; this one
    /// must have exited.
    public func restarted(logName: String) async throws(ProcessSupportError) -> NATSServerProcess {
        try await NATSServerProcess.start(directory: directory, port: port, logName: logName)
    }

    /// Sends `signal` (SIGKILL, SIGSTOP, SIGCONT, …).
    public func signal(_ signal: Int32) {
        sendSignal(signal, to: process)
    }

    /// Waits until the process has exited; `false` on timeout.
    public func waitForExit(timeout: Duration = .seconds(10)) async -> Bool {
        await waitUntilExited(process, timeout: timeout)
    }

    /// SIGTERM, and waits for the exit.
    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}
