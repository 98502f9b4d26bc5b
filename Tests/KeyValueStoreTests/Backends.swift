import KeyValueStore
import SQLiteStore
import Synchronization
import TestSupport

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let seconds: Atomic<Int64>
    init(_ start: Int64 = 1_800_000_000) { seconds = Atomic(start) }
    func advance(by delta: Int64) { seconds.add(delta, ordering: .relaxed) }
    var storeClock: StoreClock { StoreClock { [self] in self.seconds.load(ordering: .relaxed) } }
}

/// Every store implementation the conformance suite runs against.
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case inMemory
    case sqlite

    var testDescription: String { rawValue }

    /// Runs `body` with a fresh, empty store of this kind.
    func withStore(
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
        }
    }
}

import Testing
