import Foundation
import KeyValueStore
import SQLiteStore
import Testing
import TestSupport

@Suite("SQLite store")
struct SQLiteStoreTests {
    @Test func itemsSurviveClosingAndReopening() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let key = ItemKey(partition: "p", sort: "s")
            do {
                let database = try await SQLiteDatabase.open(.init(path: path))
                let store = try await SQLiteKeyValueStore(database: database, tableName: "items")
                try await store.putItem(Item(key: key, attributes: ["v": 1]))
                await database.close()
            }
            let database = try await SQLiteDatabase.open(.init(path: path))
            let store = try await SQLiteKeyValueStore(database: database, tableName: "items")
            #expect(try await store.getItem(key)?["v"] == 1)
            await database.close()
        }
    }

    /// Two workers started together on a new file: each opens it (one
    /// switches it to WAL while the other waits), neither gives up.
    @Test func twoHandlesOpeningANewFileAtOnceBothSucceed() async throws {
        try await withTemporaryDirectory { directory in
            for round in 0..<20 {
                let path = directory.file("store-\(round).sqlite")
                async let first = SQLiteDatabase.open(.init(path: path))
                async let second = SQLiteDatabase.open(.init(path: path))
                let (a, b) = try await (first, second)
                let store = try await SQLiteKeyValueStore(database: a, tableName: "items")
                try await store.putItem(Item(key: ItemKey(partition: "p", sort: "s"), attributes: ["v": 1]))
                #expect(try await SQLiteKeyValueStore(database: b, tableName: "items").getItem(ItemKey(partition: "p", sort: "s"))?["v"] == 1)
                await a.close()
                await b.close()
            }
        }
    }

    @Test func tablesAreSeparate() async throws {
        try await withTemporaryDirectory { directory in
            let database = try await SQLiteDatabase.open(.init(path: directory.file("store.sqlite")))
            let first = try await SQLiteKeyValueStore(database: database, tableName: "first")
            let second = try await SQLiteKeyValueStore(database: database, tableName: "second.table-2")
            let key = ItemKey(partition: "p", sort: "s")
            try await first.putItem(Item(key: key, attributes: ["v": 1]))
            #expect(try await second.getItem(key) == nil)
            await database.close()
        }
    }

    @Test(arguments: ["ab", "", "has space", "semi;colon", "quote\"", String(repeating: "x", count: 256)])
    func invalidTableNamesAreRejected(name: String) async throws {
        try await withTemporaryDirectory { directory in
            let database = try await SQLiteDatabase.open(.init(path: directory.file("store.sqlite")))
            let error = await #expect(throws: KeyValueStoreError.self) {
                _ = try await SQLiteKeyValueStore(database: database, tableName: name)
            }
            #expect(error?.code == .validation)
            await database.close()
        }
    }

    @Test func aFileThatIsNotADatabaseIsRefusedAndLeftUntouched() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let garbage = Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
            try garbage.write(to: URL(fileURLWithPath: path))
            let error = await #expect(throws: KeyValueStoreError.self) {
                _ = try await SQLiteDatabase.open(.init(path: path))
            }
            #expect(error?.code == .corrupt)
            #expect(error?.description.contains(path) == true)
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == garbage)
        }
    }

    @Test func anotherApplicationsDatabaseIsRefused() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("foreign.sqlite")
            try runSQLite(path, "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ana');")
            let error = await #expect(throws: KeyValueStoreError.self) {
                _ = try await SQLiteDatabase.open(.init(path: path))
            }
            #expect(error?.description.contains("another application") == true)
            #expect(try runSQLite(path, "SELECT name FROM users") == "ana")
        }
    }

    @Test func aFileFromANewerVersionIsRefused() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let database = try await SQLiteDatabase.open(.init(path: path))
            await database.close()
            try runSQLite(path, "PRAGMA user_version = 99;")
            let error = await #expect(throws: KeyValueStoreError.self) {
                _ = try await SQLiteDatabase.open(.init(path: path))
            }
            #expect(error?.description.contains("newer version") == true)
        }
    }

    /// Damage inside the file (not its header) lets it open; `quickCheck`
    /// finds it (what `notify doctor` runs).
    @Test func quickCheckFindsADamagedPage() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let keys = (0..<200).map { ItemKey(partition: "p", sort: String(format: "%04d", $0)) }
            do {
                let database = try await SQLiteDatabase.open(.init(path: path))
                let store = try await SQLiteKeyValueStore(database: database, tableName: "items")
                try await store.batchWriteItems(keys.map { .put(Item(key: $0, attributes: ["v": .string(String(repeating: "x", count: 3_000))])) })
                #expect(try await database.quickCheck().isEmpty)
                #expect(try await database.pageCounts().total > 150)
                await database.close()
            }
            let handle = try #require(FileHandle(forUpdatingAtPath: path))
            try handle.seek(toOffset: 100 * 4_096)
            handle.write(Data(repeating: 0xA5, count: 4_096))
            try handle.close()

            let database = try await SQLiteDatabase.open(.init(path: path))
            let problems = try await database.quickCheck()
            #expect(problems.isEmpty == false)
            await database.close()
        }
    }

    @Test func walModeAndTheConfiguredSynchronousLevelAreApplied() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let database = try await SQLiteDatabase.open(.init(path: path, synchronous: .full))
            let store = try await SQLiteKeyValueStore(database: database, tableName: "items")
            try await store.putItem(Item(key: ItemKey(partition: "p", sort: "s")))
            #expect(try runSQLite(path, "PRAGMA journal_mode") == "wal")
            #expect(FileManager.default.fileExists(atPath: path + "-wal"))
            await database.close()
        }
    }

    @Test func aReadOnlyOpenNeedsAnInitialisedFileAndRefusesWrites() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            await #expect(throws: KeyValueStoreError.self) {
                _ = try await SQLiteDatabase.open(.init(path: path, readOnly: true))
            }
            let writer = try await SQLiteDatabase.open(.init(path: path))
            let writable = try await SQLiteKeyValueStore(database: writer, tableName: "items")
            let key = ItemKey(partition: "p", sort: "s")
            try await writable.putItem(Item(key: key, attributes: ["v": 7]))

            let reader = try await SQLiteDatabase.open(.init(path: path, readOnly: true))
            let readable = try await SQLiteKeyValueStore(database: reader, tableName: "items")
            #expect(try await readable.getItem(key)?["v"] == 7)
            let error = await #expect(throws: KeyValueStoreError.self) {
                try await readable.putItem(Item(key: key))
            }
            #expect(error?.code == .validation)
            await reader.close()
            await writer.close()
        }
    }

    /// Two handles on one file behave like two processes: writes serialise
    /// through SQLite's lock and conditions see each other's commits.
    @Test func twoHandlesOnOneFileSeeEachOthersCommits() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let one = try await SQLiteDatabase.open(.init(path: path))
            let two = try await SQLiteDatabase.open(.init(path: path))
            let storeOne = try await SQLiteKeyValueStore(database: one, tableName: "items")
            let storeTwo = try await SQLiteKeyValueStore(database: two, tableName: "items")
            let counter = ItemKey(partition: "p", sort: "counter")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for store in [storeOne, storeTwo] {
                    group.addTask {
                        for _ in 0..<200 { try await store.updateItem(counter, Update(add: ["n": 1])) }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await storeOne.getItem(counter)?["n"] == 400)
            let key = ItemKey(partition: "p", sort: "once")
            try await storeOne.putItem(Item(key: key), condition: .itemNotExists)
            await #expect(throws: KeyValueStoreError.self) {
                try await storeTwo.putItem(Item(key: key), condition: .itemNotExists)
            }
            await one.close()
            await two.close()
        }
    }
}

/// Runs SQL through the `sqlite3` shell, returning its trimmed output.
@discardableResult
func runSQLite(_ path: String, _ sql: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
    process.arguments = [path, sql]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

@Suite("SQLite checkpoints")
struct SQLiteCheckpointTests {
    /// About one 4 KiB page per item.
    private static let payload = AttributeValue.string(String(repeating: "x", count: 3_000))

    private static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
    }

    /// Past 1,000 WAL pages the background connection copies the WAL into
    /// the database file; the writer alone would wait for 8,192.
    @Test func theBackgroundCopiesTheWALIntoTheDatabaseFile() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let database = try await SQLiteDatabase.open(.init(path: path, synchronous: .normal))
            let store = try await SQLiteKeyValueStore(database: database, tableName: "items")
            let before = Self.fileSize(path)
            for index in 0..<1_500 {
                try await store.putItem(Item(key: ItemKey(partition: "p", sort: "\(index)"), attributes: ["v": Self.payload]))
            }
            #expect(await eventually { Self.fileSize(path) > before + 1_000 * 4_096 })
            await database.close()
        }
    }

    /// Under continuous small commits the WAL starts over instead of growing.
    @Test func theWALStaysBoundedUnderContinuousCommits() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory.file("store.sqlite")
            let database = try await SQLiteDatabase.open(.init(path: path, synchronous: .normal))
            let store = try await SQLiteKeyValueStore(database: database, tableName: "items")
            // About 24,000 pages in 6,000 transactions.
            for index in 0..<6_000 {
                try await store.batchWriteItems((0..<4).map { part in
                    .put(Item(key: ItemKey(partition: "p\(part)", sort: "\(index)"), attributes: ["v": Self.payload]))
                })
            }
            let walPages = Self.fileSize(path + "-wal") / 4_096
            #expect(walPages > 1_000)
            #expect(walPages < 8_192 + 1_000)
            #expect(try await store.getItem(ItemKey(partition: "p3", sort: "5999"))?["v"] == Self.payload)
            await database.close()
        }
    }
}
