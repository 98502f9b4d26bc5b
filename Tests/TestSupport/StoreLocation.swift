import DynamoDBStore
public import KeyValueStore
import SQLiteStore

/// Where a test's notifications live, so that several handles (a worker,
/// a gateway, a checker) open the same data: a SQLite file, or one table on
/// the DynamoDB emulator.
public struct StoreLocation: Sendable {
    public let backend: Backend
    private let sqlitePath: String?
    private let dynamoDB: DynamoDBConfiguration?

    /// A location for `backend` (SQLite: `directory/notify.sqlite`;
    /// DynamoDB: a new table, created here). The in-memory store has no
    /// location to share and is refused.
    public static func make(_ backend: Backend, directory: TemporaryDirectory) async throws -> StoreLocation {
        switch backend {
        case .inMemory:
            throw ChildProcessError(message: "the in-memory store cannot be shared between a worker and a gateway")
        case .sqlite:
            return StoreLocation(backend: backend, sqlitePath: directory.file("notify.sqlite"), dynamoDB: nil)
        case .dynamodb:
            let store = try await DynamoDBEmulator.store()
            return StoreLocation(backend: backend, sqlitePath: nil, dynamoDB: store.configuration)
        }
    }

    /// A new handle on the store and what closes it.
    public func open() async throws -> OpenedStore {
        if let sqlitePath {
            let database = try await SQLiteDatabase.open(.init(path: sqlitePath))
            let store = try await SQLiteKeyValueStore(database: database, tableName: "notifications")
            return OpenedStore(store: store, close: { await database.close() })
        }
        guard let dynamoDB else { throw ChildProcessError(message: "no store location") }
        return OpenedStore(store: try DynamoDBKeyValueStore(configuration: dynamoDB), close: {})
    }

    /// Deletes a DynamoDB table (a SQLite file goes with its directory).
    public func remove() async {
        if let dynamoDB { await DynamoDBEmulator.deleteTable(dynamoDB) }
    }

    /// What a `notify` process needs in its environment to use this store.
    public var environment: [String: String] {
        guard let dynamoDB else { return ["STORE": "sqlite"] }
        return [
            "STORE": "dynamodb", "DYNAMODB_ENDPOINT": dynamoDB.endpoint, "AWS_REGION": dynamoDB.region,
            "AWS_ACCESS_KEY_ID": dynamoDB.credentials.accessKeyID, "AWS_SECRET_ACCESS_KEY": dynamoDB.credentials.secretAccessKey,
            "NOTIF_TABLE_NAME": dynamoDB.tableName,
        ]
    }
}

/// An open store handle.
public struct OpenedStore: Sendable {
    public let store: any KeyValueStore
    public let close: @Sendable () async -> Void
}

extension Backend {
    /// The backends a worker and a gateway can share: SQLite, and DynamoDB
    /// when its emulator is available.
    public static var shared: [Backend] { allCases.filter { $0 != .inMemory } }
}
