import CSQLite
public import KeyValueStore
import Synchronization

/// An SQLite database file holding one or more key-value tables: one writer
/// connection and a few reader connections, each on its own serial queue.
///
/// Opening checks that the file is ours (its `application_id`), refuses a
/// file written by a newer schema, migrates an older one, and switches to WAL
/// with the configured `synchronous` level. A foreign or damaged file is
/// reported, never replaced.
public final class SQLiteDatabase: Sendable {
    /// How durable a commit is.
    public enum Synchronous: String, Sendable, CaseIterable {
        /// `synchronous=FULL`: a commit survives power loss (the default).
        case full
        /// `synchronous=NORMAL`: a commit survives a process crash; the last
        /// commits may be lost on power loss.
        case normal
    }

    /// Where the file is and how to use it.
    public struct Configuration: Sendable {
        /// The database file; created when missing (unless read-only).
        public var path: String
        public var synchronous: Synchronous
        /// How long a write waits for a lock held by another process.
        public var busyTimeout: Duration
        /// Page cache of the writer connection, in KiB.
        public var writerCacheKiB: Int
        /// Page cache of each reader connection, in KiB.
        public var readerCacheKiB: Int
        /// Reader connections opened alongside the writer.
        public var readerCount: Int
        /// Open without a writer; the file must exist at the current schema.
        public var readOnly: Bool

        public init(
            path: String,
            synchronous: Synchronous = .full,
            busyTimeout: Duration = .seconds(5),
            writerCacheKiB: Int = 32 * 1024,
            readerCacheKiB: Int = 8 * 1024,
            readerCount: Int = 2,
            readOnly: Bool = false
        ) {
            self.path = path
            self.synchronous = synchronous
            self.busyTimeout = busyTimeout
            self.writerCacheKiB = writerCacheKiB
            self.readerCacheKiB = readerCacheKiB
            self.readerCount = readerCount
            self.readOnly = readOnly
        }
    }

    /// `PRAGMA application_id` of our files ("ntfy").
    static let applicationID: Int64 = 0x6E74_6679
    /// The schema version this build writes (`PRAGMA user_version`).
    static let schemaVersion: Int64 = 1

    public let configuration: Configuration
    let writer: SQLiteQueue?
    let checkpointer: BackgroundCheckpointer?
    let readers: [SQLiteQueue]
    private let nextReader = Atomic<Int>(0)

    private init(configuration: Configuration, writer: SQLiteQueue?, checkpointer: BackgroundCheckpointer?, readers: [SQLiteQueue]) {
        self.configuration = configuration
        self.writer = writer
        self.checkpointer = checkpointer
        self.readers = readers
    }

    /// Opens (and creates or migrates when allowed) the database.
    public static func open(_ configuration: Configuration) async throws(KeyValueStoreError) -> SQLiteDatabase {
        let path = configuration.path
        var writer: SQLiteQueue?
        if !configuration.readOnly {
            let queue: SQLiteQueue
            do { queue = try await SQLiteQueue(label: "notify.sqlite.writer", path: path, readOnly: false) }
            catch { throw error.storeError }
            do {
                try await queue.run { connection throws(KeyValueStoreError) in
                    try Self.prepareWriter(connection, configuration: configuration)
                }
            } catch {
                await queue.close()
                throw error
            }
            writer = queue
        }
        var checkpointer: BackgroundCheckpointer?
        if let writer {
            do {
                checkpointer = try await openCheckpointer(writer: writer, configuration: configuration)
            } catch {
                await writer.close()
                throw error
            }
        }
        var readers: [SQLiteQueue] = []
        do throws(KeyValueStoreError) {
            for index in 0..<max(1, configuration.readerCount) {
                let reader: SQLiteQueue
                do { reader = try await SQLiteQueue(label: "notify.sqlite.reader.\(index)", path: path, readOnly: true) }
                catch { throw error.storeError }
                readers.append(reader)
                try await reader.run { connection throws(KeyValueStoreError) in
                    try Self.prepareReader(connection, configuration: configuration)
                }
            }
        } catch {
            for reader in readers { await reader.close() }
            await checkpointer?.close()
            await writer?.close()
            throw error
        }
        return SQLiteDatabase(configuration: configuration, writer: writer, checkpointer: checkpointer, readers: readers)
    }

    /// Opens the background checkpointer's connection and hands the
    /// writer's checkpoints to ``WALCheckpointPolicy``.
    private static func openCheckpointer(writer: SQLiteQueue, configuration: Configuration) async throws(KeyValueStoreError) -> BackgroundCheckpointer {
        let queue: SQLiteQueue
        do { queue = try await SQLiteQueue(label: "notify.sqlite.checkpointer", path: configuration.path, readOnly: false) }
        catch { throw error.storeError }
        let checkpointer = BackgroundCheckpointer(queue: queue)
        do {
            try await queue.run { connection throws(KeyValueStoreError) in
                // The checkpoint syncs the file as the writer's level says.
                try mapped { () throws(SQLiteError) in
                    try connection.execute("PRAGMA synchronous = \(configuration.synchronous.rawValue.uppercased())")
                }
            }
            try await writer.run { connection throws(KeyValueStoreError) in
                connection.install(WALCheckpointPolicy(background: checkpointer))
            }
        } catch {
            await checkpointer.close()
            throw error
        }
        return checkpointer
    }

    /// Closes every connection; the writer checkpoints the WAL first.
    public func close() async {
        for reader in readers { await reader.close() }
        await checkpointer?.close()
        await writer?.close { connection in
            try? connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        }
    }

    /// The size of the database in pages, as of the last commit.
    public struct PageCounts: Sendable, Hashable {
        /// Pages in the database (its file once the WAL is checkpointed).
        public let total: Int64
        /// Pages freed by deletions; the file keeps them and writes reuse them first.
        public let free: Int64
        /// Pages holding data.
        public var used: Int64 { total - free }
    }

    /// How many pages the database holds, and how many of them are free.
    public func pageCounts() async throws(KeyValueStoreError) -> PageCounts {
        try await readerQueue().run { connection throws(KeyValueStoreError) in
            try mapped { () throws(SQLiteError) -> PageCounts in
                try connection.execute("BEGIN")
                defer { try? connection.execute("COMMIT") }
                return PageCounts(
                    total: try connection.scalar("PRAGMA page_count") ?? 0,
                    free: try connection.scalar("PRAGMA freelist_count") ?? 0)
            }
        }
    }

    /// SQLite's `PRAGMA quick_check`: reads every page of the file and
    /// returns the problems found, empty when there are none. It takes
    /// about as long as reading the file.
    public func quickCheck() async throws(KeyValueStoreError) -> [String] {
        try await readerQueue().run { connection throws(KeyValueStoreError) in
            try mapped { () throws(SQLiteError) -> [String] in
                let statement = try connection.statement("PRAGMA quick_check(100)")
                defer { statement.reset() }
                var lines: [String] = []
                while try statement.step() { lines.append(statement.text(0)) }
                return lines == ["ok"] ? [] : lines
            }
        }
    }

    /// The writer queue, or an error for a read-only database.
    func writerQueue() throws(KeyValueStoreError) -> SQLiteQueue {
        guard let writer else {
            throw KeyValueStoreError(code: .validation, message: "the SQLite store at \(configuration.path) is open read-only")
        }
        return writer
    }

    /// A reader queue, round robin.
    func readerQueue() -> SQLiteQueue {
        let index = nextReader.wrappingAdd(1, ordering: .relaxed).oldValue
        return readers[index % readers.count]
    }

    // MARK: Start-up checks and migrations

    private static func explain(_ error: SQLiteError, path: String) -> KeyValueStoreError {
        switch error.primaryCode {
        case SQLITE_NOTADB, SQLITE_CORRUPT:
            return KeyValueStoreError(
                code: .corrupt,
                message: "\(path) is not a readable notify store (\(error.message)); it was left untouched: move it away or set DATA_DIR to another directory")
        default:
            return error.storeError
        }
    }

    private static func prepareWriter(_ connection: SQLiteConnection, configuration: Configuration) throws(KeyValueStoreError) {
        let path = configuration.path
        do throws(SQLiteError) {
            try connection.execute("PRAGMA busy_timeout = \(milliseconds(configuration.busyTimeout))")
            try checkOwnership(connection, path: path, allowNew: true)
            let mode = try switchToWAL(connection, within: configuration.busyTimeout)
            guard mode?.lowercased() == "wal" else {
                throw SQLiteError(code: SQLITE_ERROR, message: "cannot switch \(path) to WAL mode (journal_mode is \(mode ?? "unknown"))")
            }
            try connection.execute("""
                PRAGMA synchronous = \(configuration.synchronous.rawValue.uppercased());
                PRAGMA cache_size = -\(configuration.writerCacheKiB);
                PRAGMA journal_size_limit = 67108864;
                PRAGMA temp_store = MEMORY;
                """)
            try migrate(connection, path: path)
        } catch {
            throw explain(error, path: path)
        }
    }

    /// `PRAGMA journal_mode = WAL`, retried while another process holds
    /// the lock: two processes opening a new file at once need it in turn,
    /// and SQLite answers one of them busy at once, without waiting.
    private static func switchToWAL(_ connection: SQLiteConnection, within timeout: Duration) throws(SQLiteError) -> String? {
        let deadline = ContinuousClock.now + timeout
        while true {
            do {
                return try connection.scalarText("PRAGMA journal_mode = WAL")
            } catch where error.primaryCode == SQLITE_BUSY && ContinuousClock.now < deadline {
                sqlite3_sleep(Int32.random(in: 5...25))
            }
        }
    }

    private static func prepareReader(_ connection: SQLiteConnection, configuration: Configuration) throws(KeyValueStoreError) {
        let path = configuration.path
        do throws(SQLiteError) {
            try connection.execute("""
                PRAGMA busy_timeout = \(milliseconds(configuration.busyTimeout));
                PRAGMA cache_size = -\(configuration.readerCacheKiB);
                PRAGMA query_only = 1;
                """)
            try checkOwnership(connection, path: path, allowNew: false)
            let version = try connection.scalar("PRAGMA user_version") ?? 0
            if version != schemaVersion {
                throw SQLiteError(code: SQLITE_ERROR, message: "\(path) has schema version \(version), this build reads version \(schemaVersion); start a worker (which migrates the file) first")
            }
        } catch {
            throw explain(error, path: path)
        }
    }

    /// Refuses files that belong to another application or a newer version.
    /// Reads the header and the schema in one snapshot: another process may
    /// be initialising the file at the same moment.
    private static func checkOwnership(_ connection: SQLiteConnection, path: String, allowNew: Bool) throws(SQLiteError) {
        try connection.execute("BEGIN")
        defer { try? connection.execute("COMMIT") }
        let applicationID = try connection.scalar("PRAGMA application_id") ?? 0
        let version = try connection.scalar("PRAGMA user_version") ?? 0
        let objects = try connection.scalar("SELECT count(*) FROM sqlite_schema") ?? 0
        if applicationID == 0 {
            if objects > 0 || version != 0 {
                throw SQLiteError(code: SQLITE_ERROR, message: "\(path) is an SQLite database of another application; it was left untouched: move it away or set DATA_DIR to another directory")
            }
            if !allowNew {
                throw SQLiteError(code: SQLITE_ERROR, message: "\(path) has not been initialised yet")
            }
        } else if applicationID != Self.applicationID {
            throw SQLiteError(code: SQLITE_ERROR, message: "\(path) is an SQLite database of another application (application_id \(applicationID)); it was left untouched")
        }
        if version > schemaVersion {
            throw SQLiteError(code: SQLITE_ERROR, message: "\(path) was written by a newer version of notify (schema \(version), this build knows up to \(schemaVersion)); upgrade notify")
        }
    }

    /// Each step takes the file from version `index` to `index + 1`.
    private static let migrations: [String] = [
        // 1: the registry of key-value tables; the tables themselves are
        // created on first use by `SQLiteKeyValueStore`.
        """
        CREATE TABLE kv_tables (
            name TEXT PRIMARY KEY NOT NULL,
            created_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ]

    private static func migrate(_ connection: SQLiteConnection, path: String) throws(SQLiteError) {
        let current = try connection.scalar("PRAGMA user_version") ?? 0
        guard current < schemaVersion else { return }
        do {
            try connection.writeTransaction { () throws(SQLiteError) in
                // Re-read under the write lock: another process may have migrated.
                let version = try connection.scalar("PRAGMA user_version") ?? 0
                for step in Int(version)..<migrations.count {
                    try connection.execute(migrations[step])
                }
                try connection.execute("PRAGMA application_id = \(applicationID); PRAGMA user_version = \(schemaVersion)")
            }
        } catch {
            switch error {
            case .sqlite(let failure), .body(let failure): throw failure
            }
        }
    }
}

func milliseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    return seconds * 1000 + attoseconds / 1_000_000_000_000_000
}
