import CSQLite

/// One prepared statement. Lives in its connection's statement cache and is
/// finalized when the connection closes.
final class SQLiteStatement {
    let handle: OpaquePointer
    let sql: String
    private let db: OpaquePointer

    init(db: OpaquePointer, sql: String) throws(SQLiteError) {
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else {
            throw SQLiteError(code: rc, db: db, sql: sql)
        }
        self.db = db
        self.handle = statement
        self.sql = sql
    }

    deinit {
        sqlite3_finalize(handle)
    }

    func error(_ rc: Int32) -> SQLiteError {
        SQLiteError(code: rc, db: db, sql: sql)
    }

    func bind(_ index: Int32, _ text: String) throws(SQLiteError) {
        var text = text
        let rc = text.withUTF8 { bytes -> Int32 in
            if bytes.isEmpty {
                return sqlite3_bind_text(handle, index, "", 0, notify_sqlite_transient())
            }
            return bytes.withMemoryRebound(to: CChar.self) {
                sqlite3_bind_text(handle, index, $0.baseAddress, Int32($0.count), notify_sqlite_transient())
            }
        }
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    func bind(_ index: Int32, _ value: Int64) throws(SQLiteError) {
        let rc = sqlite3_bind_int64(handle, index, value)
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    func bind(_ index: Int32, _ value: Int64?) throws(SQLiteError) {
        if let value { try bind(index, value) } else { try bindNull(index) }
    }

    func bind(_ index: Int32, blob: [UInt8]) throws(SQLiteError) {
        let rc = blob.withUnsafeBytes { bytes -> Int32 in
            if bytes.isEmpty { return sqlite3_bind_zeroblob(handle, index, 0) }
            return sqlite3_bind_blob(handle, index, bytes.baseAddress, Int32(bytes.count), notify_sqlite_transient())
        }
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    func bindNull(_ index: Int32) throws(SQLiteError) {
        let rc = sqlite3_bind_null(handle, index)
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    /// Advances; `true` when a row is available, `false` when done.
    func step() throws(SQLiteError) -> Bool {
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let rc: throw error(rc)
        }
    }

    /// Makes the statement ready for reuse and drops its bindings.
    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    func isNull(_ column: Int32) -> Bool {
        sqlite3_column_type(handle, column) == SQLITE_NULL
    }

    func int64(_ column: Int32) -> Int64 {
        sqlite3_column_int64(handle, column)
    }

    func text(_ column: Int32) -> String {
        guard let pointer = sqlite3_column_text(handle, column) else { return "" }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    /// Calls `body` with the column's bytes, valid only during the call.
    func withBlob<T>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws(SQLiteError) -> T) throws(SQLiteError) -> T {
        let pointer = sqlite3_column_blob(handle, column)
        let count = Int(sqlite3_column_bytes(handle, column))
        return try body(UnsafeRawBufferPointer(start: pointer, count: pointer == nil ? 0 : count))
    }
}

/// One SQLite connection and its statement cache. Not thread-safe: each
/// connection is owned by exactly one ``SQLiteQueue``.
final class SQLiteConnection {
    let db: OpaquePointer
    let path: String
    private var statements: [String: SQLiteStatement] = [:]
    /// Retained while installed as the WAL hook.
    private var checkpointPolicy: WALCheckpointPolicy?

    init(path: String, readOnly: Bool) throws(SQLiteError) {
        var handle: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE))
            | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let error = SQLiteError(code: rc, db: handle, sql: nil)
            sqlite3_close_v2(handle)
            throw SQLiteError(code: error.extendedCode, message: "cannot open \(path): \(error.message)")
        }
        sqlite3_extended_result_codes(handle, 1)
        self.db = handle
        self.path = path
    }

    deinit {
        if checkpointPolicy != nil {
            sqlite3_wal_hook(db, nil, nil)
        }
        statements.removeAll()
        sqlite3_close_v2(db)
    }

    /// Runs one or more statements that return no rows we need.
    func execute(_ sql: String) throws(SQLiteError) {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_free(message)
            throw SQLiteError(code: sqlite3_extended_errcode(db), message: text, sql: sql)
        }
    }

    /// The cached prepared statement for `sql`, reset and ready to bind.
    func statement(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        if let cached = statements[sql] { return cached }
        let statement = try SQLiteStatement(db: db, sql: sql)
        statements[sql] = statement
        return statement
    }

    /// Runs a query returning one integer (a pragma, a count).
    func scalar(_ sql: String) throws(SQLiteError) -> Int64? {
        let statement = try statement(sql)
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return statement.isNull(0) ? nil : statement.int64(0)
    }

    /// Runs a query returning one text value.
    func scalarText(_ sql: String) throws(SQLiteError) -> String? {
        let statement = try statement(sql)
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return statement.isNull(0) ? nil : statement.text(0)
    }

    /// Replaces SQLite's autocheckpoint with `policy`, called after each commit.
    func install(_ policy: WALCheckpointPolicy) {
        checkpointPolicy = policy
        sqlite3_wal_hook(db, { context, _, _, frames in
            guard let context else { return SQLITE_OK }
            Unmanaged<WALCheckpointPolicy>.fromOpaque(context).takeUnretainedValue().committed(frames: Int(frames))
            return SQLITE_OK
        }, Unmanaged.passUnretained(policy).toOpaque())
    }

    /// Rows changed by the last statement.
    var changes: Int { Int(sqlite3_changes(db)) }

    /// Runs `body` inside `BEGIN IMMEDIATE … COMMIT`, rolling back on error.
    func writeTransaction<T, E: Error>(_ body: () throws(E) -> T) throws(TransactionError<E>) -> T {
        do { try execute("BEGIN IMMEDIATE") } catch { throw .sqlite(error) }
        let result: T
        do {
            result = try body()
        } catch {
            try? execute("ROLLBACK")
            throw .body(error)
        }
        do {
            try execute("COMMIT")
        } catch {
            try? execute("ROLLBACK")
            throw .sqlite(error)
        }
        return result
    }
}

/// A failure inside ``SQLiteConnection/writeTransaction(_:)``: from SQLite
/// itself (begin, commit) or from the body.
enum TransactionError<E: Error>: Error {
    case sqlite(SQLiteError)
    case body(E)
}
