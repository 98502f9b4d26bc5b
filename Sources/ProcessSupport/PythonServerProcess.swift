public import Foundation

/// A test server written in Python (`scripts/*.py`) on loopback, as a
/// child process that exits when its parent does: moto's DynamoDB, the
/// SMTP server, the push service stand-in. Each prints
/// `listening on 127.0.0.1:<port>` once it answers.
/// `scripts/install-test-servers.sh` installs what they import.
public struct PythonServerProcess: Sendable {
    public let process: Process
    /// `127.0.0.1:<port>`.
    public let address: String
    /// The port it listens on.
    public var port: Int { Int(address.split(separator: ":").last ?? "") ?? 0 }
    /// Its output.
    public let log: String

    /// The checkout this code was built from: the scripts and the
    /// virtualenv are found there.
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The python3 with the servers' modules: the virtualenv
    /// `scripts/install-test-servers.sh` makes when the system's lacks one.
    static let python: String = {
        let virtualenv = repository.appendingPathComponent(".build/python/bin/python3").path
        return FileManager.default.isExecutableFile(atPath: virtualenv) ? virtualenv : "/usr/bin/env"
    }()

    private static var pythonArguments: [String] { python == "/usr/bin/env" ? ["python3"] : [] }

    /// Whether `module` can be imported.
    public static func canImport(_ module: String) -> Bool {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: python)
        probe.arguments = pythonArguments + ["-c", "import \(module)"]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        do {
            try probe.run()
            probe.waitUntilExit()
            return probe.terminationStatus == 0
        } catch {
            return false
        }
    }

    /// Starts `scripts/<script>` with `arguments`, its output in `log`;
    /// returns once it says where it listens.
    public static func start(_ script: String, arguments: [String] = [], log: String, name: String) async throws(ProcessSupportError) -> PythonServerProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = pythonArguments + [repository.appendingPathComponent("scripts/" + script).path] + arguments
        try run(process, log: log, name: name)
        let marker = "listening on "
        for _ in 0..<1_200 {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let line = output.split(separator: "\n").first(where: { $0.hasPrefix(marker) }) {
                let address = line.dropFirst(marker.count).trimmingCharacters(in: .whitespaces)
                return PythonServerProcess(process: process, address: address, log: log)
            }
            if !process.isRunning { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        if process.isRunning { process.terminate() }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw ProcessSupportError("\(name) did not start (scripts/install-test-servers.sh installs what it needs):\n\(output.suffix(2_000))")
    }

    /// SIGTERM, and waits for the exit (SIGKILL after 10 s).
    public func stop() {
        stopProcess(process)
    }
}
