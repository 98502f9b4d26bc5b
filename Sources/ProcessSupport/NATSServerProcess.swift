public import Foundation

/// A `nats-server -js` child process on 127.0.0.1, storing its JetStream
/// data under a directory of the caller's, alone or as a member of a
/// cluster (``startCluster(directory:size:)``). Can be signalled (to
/// simulate crashes and stalls) and restarted on the same port with the
/// same data.
public struct NATSServerProcess: Sendable {
    public let process: Process
    public let port: Int
    /// Holds `jetstream/` and the server's logs.
    public let directory: String
    /// This incarnation's log file.
    public let log: String
    /// Its place in a cluster; `nil` for a lone server.
    public let membership: ClusterMembership?

    /// A server's name and routes in a cluster on loopback.
    public struct ClusterMembership: Sendable {
        public let clusterName: String
        public let serverName: String
        /// The port other members route to.
        public let routePort: Int
        /// Every member's route port, this one's included.
        public let routePorts: [Int]

        var arguments: [String] {
            [
                "--server_name", serverName, "--cluster_name", clusterName,
                "--cluster", "nats://127.0.0.1:\(routePort)",
                "--routes", routePorts.filter { $0 != routePort }.map { "nats://127.0.0.1:\($0)" }.joined(separator: ","),
            ]
        }
    }

    /// `nats://127.0.0.1:<port>`.
    public var url: String { "nats://127.0.0.1:\(port)" }
    public var pid: pid_t { process.processIdentifier }

    /// Starts a server; `port` `nil` lets it pick a free one. Returns once
    /// it listens.
    public static func start(
        directory: String, port: Int? = nil, logName: String = "nats.log", membership: ClusterMembership? = nil
    ) async throws(ProcessSupportError) -> NATSServerProcess {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin"]
        guard let executable = path.map({ $0 + "/nats-server" }).first(where: FileManager.default.isExecutableFile(atPath:)) else {
            throw ProcessSupportError("nats-server is not installed (apt-get install nats-server)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let log = directory + "/" + logName
        try? FileManager.default.removeItem(atPath: log)
        process.arguments = ["-js", "-a", "127.0.0.1", "-p", port.map(String.init) ?? "-1", "-sd", directory + "/jetstream", "-l", log]
            + (membership?.arguments ?? [])
        do { try process.run() } catch { throw ProcessSupportError("cannot start \(executable): \(error)") }
        for _ in 0..<400 {
            if let text = try? String(contentsOfFile: log, encoding: .utf8), text.contains("Server is ready"),
               let line = text.split(separator: "\n").first(where: { $0.contains("Listening for client connections on") }),
               let found = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) {
                return NATSServerProcess(process: process, port: found, directory: directory, log: log, membership: membership)
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
        try await NATSServerProcess.start(directory: directory, port: port, logName: logName, membership: membership)
    }

    /// `size` servers routed to each other as the cluster `notify`, each
    /// in its own subdirectory `n1`, `n2`… of `directory`. Returns once
    /// every one listens for clients and JetStream has a meta leader.
    public static func startCluster(directory: String, size: Int = 3) async throws(ProcessSupportError) -> [NATSServerProcess] {
        var routePorts: [Int] = []
        for _ in 0..<size { routePorts.append(try LoopbackSocket.freePort()) }
        var servers: [NATSServerProcess] = []
        for (index, routePort) in routePorts.enumerated() {
            let memberDirectory = directory + "/n\(index + 1)"
            do {
                try FileManager.default.createDirectory(atPath: memberDirectory, withIntermediateDirectories: true)
            } catch {
                throw ProcessSupportError("cannot create \(memberDirectory): \(error)")
            }
            let membership = ClusterMembership(clusterName: "notify", serverName: "n\(index + 1)", routePort: routePort, routePorts: routePorts)
            do {
                servers.append(try await start(directory: memberDirectory, membership: membership))
            } catch {
                servers.forEach { $0.stop() }
                throw error
            }
        }
        for _ in 0..<600 {
            let logs = servers.map { (try? String(contentsOfFile: $0.log, encoding: .utf8)) ?? "" }
            if logs.contains(where: { $0.contains("JetStream cluster new metadata leader") || $0.contains("Self is new JetStream cluster metadata leader") }) {
                return servers
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        servers.forEach { $0.stop() }
        throw ProcessSupportError("the \(size) nats-servers did not elect a JetStream meta leader within 30 s; see \(directory)/n*/nats.log")
    }

    /// Sends `signal` (SIGKILL, SIGSTOP, SIGCONT, …).
    public func signal(_ signal: Int32) {
        sendSignal(signal, to: process)
    }

    /// Waits until the process has exited; `false` on timeout.
    public func waitForExit(timeout: Duration = .seconds(10)) async -> Bool {
        await waitUntilExited(process, timeout: timeout)
    }

    /// CPU seconds the server has used so far.
    public func cpuSeconds() -> Double? { processCPUSeconds(pid) }

    /// SIGTERM, and waits for the exit (SIGKILL after 10 s).
    public func stop() {
        stopProcess(process)
    }
}
