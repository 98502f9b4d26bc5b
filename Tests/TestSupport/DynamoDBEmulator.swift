public import DynamoDBStore
import Foundation
public import KeyValueStore
import Synchronization

/// A DynamoDB-compatible server (moto's server mode) on loopback, started
/// once per test process by `scripts/moto-server.py` and gone when the
/// process ends. `make test` installs moto (`scripts/install-moto.sh`).
public enum DynamoDBEmulator {
    /// Whether the DynamoDB backend is tested: moto can be imported, or
    /// `CI=true` (where its absence must fail the run, not skip tests).
    public static let isEnabled: Bool = {
        if ProcessInfo.processInfo.environment["CI"] == "true" { return true }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = [python, "-c", "import moto.server"]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        do {
            try probe.run()
            probe.waitUntilExit()
            return probe.terminationStatus == 0
        } catch {
            return false
        }
    }()

    private static let started = Mutex<Task<String, any Error>?>(nil)

    private static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The python3 that has moto: the virtualenv `scripts/install-moto.sh`
    /// makes when the system's has not.
    private static let python: String = {
        let virtualenv = repository.appendingPathComponent(".build/moto/bin/python3").path
        return FileManager.default.isExecutableFile(atPath: virtualenv) ? virtualenv : "python3"
    }()

    /// `http://127.0.0.1:<port>` of the shared server, started on first use.
    public static func endpoint() async throws -> String {
        let task = started.withLock { task in
            if let task { return task }
            let starting = Task { try await start() }
            task = starting
            return starting
        }
        return try await task.value
    }

    private static func start() async throws -> String {
        let script = repository.appendingPathComponent("scripts/moto-server.py").path
        let directory = try TemporaryDirectory(prefix: "moto")
        let process = try ChildProcess.spawn(python, arguments: [script], outputPath: directory.file("moto.log"))
        do {
            try await process.waitForOutput(containing: "listening on ", timeout: .seconds(60))
        } catch {
            throw ChildProcessError(message: "moto's DynamoDB server did not start (pip install 'moto[server]'):\n\(process.output)")
        }
        guard let line = process.output.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }) else {
            throw ChildProcessError(message: "cannot read moto's address from:\n\(process.output)")
        }
        return "http://" + line.dropFirst("listening on ".count).trimmingCharacters(in: .whitespaces)
    }

    /// A configuration for a new, uniquely named table on the emulator.
    public static func configuration(tablePrefix: String = "t") async throws -> DynamoDBConfiguration {
        DynamoDBConfiguration(
            endpoint: try await endpoint(), region: "us-east-1",
            credentials: AWSCredentials(accessKeyID: "testing", secretAccessKey: "testing"),
            tableName: "\(tablePrefix)-\(UUID().uuidString.lowercased())",
            baseBackoff: .milliseconds(5))
    }

    /// Deletes the table of `configuration`, if it exists.
    public static func deleteTable(_ configuration: DynamoDBConfiguration) async {
        try? await DynamoDBKeyValueStore(configuration: configuration).deleteTable()
    }

    /// A store on a new table, created (with TTL) before it is returned.
    public static func store(clock: StoreClock = .system) async throws -> DynamoDBKeyValueStore {
        let store = try DynamoDBKeyValueStore(configuration: try await configuration(), clock: clock)
        _ = try await store.createTable()
        return store
    }
}
