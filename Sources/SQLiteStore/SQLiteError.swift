import CSQLite
import KeyValueStore

/// An error reported by SQLite, with the extended result code, SQLite's own
/// message, and the statement that failed.
public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    /// The extended result code (`sqlite3_extended_errcode`).
    public let extendedCode: Int32
    /// SQLite's message (`sqlite3_errmsg`) or our own explanation.
    public let message: String
    /// The SQL being run, when there was one.
    public let sql: String?

    /// The primary result code (the low 8 bits of the extended code).
    public var primaryCode: Int32 { extendedCode & 0xFF }

    init(code: Int32, message: String, sql: String? = nil) {
        self.extendedCode = code
        self.message = message
        self.sql = sql
    }

    init(code: Int32, db: OpaquePointer?, sql: String? = nil) {
        let extended = db.map { sqlite3_extended_errcode($0) } ?? code
        let text = db.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(code))
        self.init(code: extended == 0 ? code : extended, message: text, sql: sql)
    }

    public var description: String {
        var text = "SQLite error \(extendedCode) (\(String(cString: sqlite3_errstr(primaryCode)))): \(message)"
        if let sql { text += " [in: \(sql)]" }
        return text
    }

    /// The same failure as a ``KeyValueStoreError`` of the matching kind.
    var storeError: KeyValueStoreError {
        let code: KeyValueStoreError.Code
        switch primaryCode {
        case SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_PROTOCOL, SQLITE_NOMEM, SQLITE_INTERRUPT:
            code = .unavailable
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            code = .corrupt
        default:
            code = .internalError
        }
        return KeyValueStoreError(code: code, message: description)
    }
}
