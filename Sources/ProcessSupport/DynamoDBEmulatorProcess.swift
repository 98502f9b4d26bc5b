public import Foundation

/// moto's DynamoDB-compatible server on loopback
/// (`scripts/moto-server.py`, installed by `scripts/install-test-servers.sh`), as
/// a child process that exits when its parent does.
public struct DynamoDBEmulatorProcess: Sendable {
    public let process: Process
    /// `http://127.0.0.1:<port>`.
    public let endpoint: String
    /// Its output.
    public let log: String

    /// Whether moto can be imported.
    public static func isInstalled() -> Bool {
        PythonServerProcess.canImport("moto.server")
    }

    /// Starts the server on a free port, its output in `log`; returns once
    /// it answers.
    public static func start(log: String) async throws(ProcessSupportError) -> DynamoDBEmulatorProcess {
        let server = try await PythonServerProcess.start("moto-server.py", log: log, name: "moto's DynamoDB server")
        return DynamoDBEmulatorProcess(process: server.process, endpoint: "http://" + server.address, log: log)
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
