public import KeyValueStore
import DynamoDBStore
import SQLiteStore
import Synchronization
public import Testing

/// A clock the test moves by hand.
public final class ManualClock: Sendable {
    private let seconds: Atomic<Int64>
    public init(_ start: Int64 = 1_800_000_000) { seconds = Atomic(start) }
    public func advance(by delta: Int64) { seconds.add(delta, ordering: .relaxed) }
    public var now: Int64 { seconds.load(ordering: .relaxed) }
    public var storeClock: StoreClock { StoreClock { [self] in self.seconds.load(ordering: .relaxed) } }
}

/// Every store implementation the conformance suite runs against.
public enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case inMemory
    case sqlite
    /// DynamoDB's API on moto's server; left out when moto is not installed
    /// (outside CI).
    case dynamodb

    public static var allCases: [Backend] {
        DynamoDBEmulator.isEnabled ? [.inMemory, .sqlite, .dynamodb] : [.inMemory, .sqlite]
    }

    public var testDescription: String { rawValue }

    /// Runs `body` with a fresh, empty store of this kind.
    public func withStore(
        clock: ManualClock = ManualClock(),
        _ body: (any KeyValueStore) async throws -> Void
    ) async throws {
        switch self {
        case .inMemory:
            try await body(InMemoryKeyValueStore(clock: clock.storeClock))
        case .sqlite:
            try await withTemporaryDirectory { directory in
                let database = try await SQLiteDatabase.open(.init(path: directory.file("store.sqlite")))
                let store = try await SQLiteKeyValueStore(database: database, tableName: "conformance", clock: clock.storeClock)
                do {
                    try await body(store)
                } catch {
                    await database.close()
                    throw error
                }
                await database.close()
            }
        case .dynamodb:
            let store = try await DynamoDBEmulator.store(clock: clock.storeClock)
            do {
                try await body(store)
            } catch {
                try? await store.deleteTable()
                throw error
            }
            try await store.deleteTable()
        }
    }
}

