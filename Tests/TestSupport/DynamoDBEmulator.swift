public import DynamoDBStore
import Foundation
public import KeyValueStore
import ProcessSupport
import Synchronization

/// A DynamoDB-compatible server (moto's server mode) on loopback, started
/// once per test process by `scripts/moto-server.py` and gone when the
/// process ends. `make test` installs moto (`scripts/install-test-servers.sh`).
public enum DynamoDBEmulator {
    /// Whether the DynamoDB backend is tested: moto can be imported, or
    /// `CI=true` (where its absence must fail the run, not skip tests).
    public static let isEnabled: Bool =
        ProcessInfo.processInfo.environment["CI"] == "true" || DynamoDBEmulatorProcess.isInstalled()

    private static let started = Mutex<Task<String, any Error>?>(nil)

    /// `http://127.0.0.1:<port>` of the shared server, started on first use.
    public static func endpoint() async throws -> String {
        let task = started.withLock { task in
            if let task { return task }
            let starting = Task {
                let directory = try TemporaryDirectory(prefix: "moto")
                return try await DynamoDBEmulatorProcess.start(log: directory.file("moto.log")).endpoint
            }
            task = starting
            return starting
        }
        return try await task.value
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
