public import Foundation

/// moto's DynamoDB-compatible server on loopback
/// (`scripts/moto-server.py`, installed by `scripts/install-moto.sh`), as
/// a child process that exits when its parent does.
public struct DynamoDBEmulatorProcess: Sendable {
    public let process: Process
    /// `http://127.0.0.1:<port>`.
    public let endpoint: String
    /// Its output.
    public let log: String

    /// The checkout this code was built from: the script and the
    /// virtualenv are found there.
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The python3 that has moto: the virtualenv `scripts/install-moto.sh`
    /// makes when the system's has not.
    public static let python: String = {
        let virtualenv = repository.appendingPathComponent(".build/moto/bin/python3").path
        return FileManager.default.isExecutableFile(atPath: virtualenv) ? virtualenv : "/usr/bin/env"
    }()

    private static var pythonArguments: [String] { python == "/usr/bin/env" ? ["python3"] : [] }

    /// Whether moto can be imported.
    public static func isInstalled() -> Bool {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: python)
        probe.arguments = pythonArguments + ["-c", "import moto.server"]
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

    /// Starts the server on a free port, its output in `log`; returns once
    /// it answers.
    public static func start(log: String) async throws(ProcessSupportError) -> DynamoDBEmulatorProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = pythonArguments + [repository.appendingPathComponent("scripts/moto-server.py").path]
        try run(process, log: log, name: "moto's DynamoDB server")
        let marker = "listening on "
        for _ in 0..<1_200 {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let line = output.split(separator: "\n").first(where: { $0.hasPrefix(marker) }) {
                let address = line.dropFirst(marker.count).trimmingCharacters(in: .whitespaces)
                return DynamoDBEmulatorProcess(process: process, endpoint: "http://" + address, log: log)
            }
            if !process.isRunning { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        if process.isRunning { process.terminate() }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw ProcessSupportError("moto's DynamoDB server did not start (scripts/install-moto.sh installs it):\n\(output.suffix(2_000))")
    }

    /// What a `notify` process needs in its environment to use `table` on
    /// this server.
    public func notifyEnvironment(table: String) -> [String: String] {
        [
            "STORE": "dynamodb", "DYNAMODB_ENDPOINT": endpoint, "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "NOTIF_TABLE_NAME": table,
        ]
    }

    /// Runs `notify store create-table` with `environment` (which must
    /// include ``notifyEnvironment(table:)``); throws with its output when
    /// it fails.
    public func createTable(environment: [String: String], log: String) async throws(ProcessSupportError) {
        let create = try NotifyProcess.start(command: "store create-table", environment: environment, log: log)
        guard await create.waitForExit(timeout: .seconds(60)), create.process.terminationStatus == 0 else {
            throw ProcessSupportError("notify store create-table failed: \(create.output.suffix(1_000))")
        }
    }

    /// CPU seconds the server has used so far.
    public func cpuSeconds() -> Double? { processCPUSeconds(process.processIdentifier) }

    /// SIGTERM, and waits for the exit (SIGKILL after 10 s).
    public func stop() {
        stopProcess(process)
    }
}
