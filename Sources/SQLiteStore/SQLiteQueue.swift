import Dispatch
import KeyValueStore

/// Owns one ``SQLiteConnection`` and runs every use of it on one serial
/// dispatch queue, off Swift's cooperative thread pool (SQLite calls block on
/// disk and on locks held by other processes).
final class SQLiteQueue: @unchecked Sendable {
    private let queue: DispatchQueue
    /// Touched only on `queue`.
    private var connection: SQLiteConnection?
    private let path: String

    /// Opens the connection on the new queue.
    init(label: String, path: String, readOnly: Bool) async throws(SQLiteError) {
        self.queue = DispatchQueue(label: label)
        self.path = path
        let opened: Result<SQLiteConnection, SQLiteError> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(SQLiteError) {
                    continuation.resume(returning: .success(try SQLiteConnection(path: path, readOnly: readOnly)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        // The continuation ordered the queue's write before this read.
        self.connection = try opened.get()
    }

    /// Runs `body` with the connection on the queue and returns its result.
    func run<T: Sendable>(
        _ body: @escaping @Sendable (SQLiteConnection) throws(KeyValueStoreError) -> T
    ) async throws(KeyValueStoreError) -> T {
        let result: Result<T, KeyValueStoreError> = await withCheckedContinuation { continuation in
            queue.async {
                guard let connection = self.connection else {
                    continuation.resume(returning: .failure(KeyValueStoreError(
                        code: .unavailable, message: "the SQLite store at \(self.path) is closed")))
                    return
                }
                do throws(KeyValueStoreError) {
                    continuation.resume(returning: .success(try body(connection)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    /// Runs `body` with the connection on the queue, without waiting for it.
    /// Nothing runs once the queue is closed.
    func submit(_ body: @escaping @Sendable (SQLiteConnection) -> Void) {
        queue.async {
            if let connection = self.connection { body(connection) }
        }
    }

    /// Runs `body` with the connection on the queue and waits for it, from
    /// a thread that is not Swift's cooperative pool (another queue).
    func runBlocking(_ body: (SQLiteConnection) -> Void) {
        queue.sync {
            if let connection = self.connection { body(connection) }
        }
    }

    /// Runs `finally` with the connection, then closes it. Later calls to
    /// ``run(_:)`` fail with an `unavailable` error.
    func close(_ finally: @escaping @Sendable (SQLiteConnection) -> Void = { _ in }) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                if let connection = self.connection { finally(connection) }
                self.connection = nil
                continuation.resume()
            }
        }
    }
}

/// Converts SQLite failures to store errors at the module boundary.
@inline(__always)
func mapped<T>(_ body: () throws(SQLiteError) -> T) throws(KeyValueStoreError) -> T {
    do {
        return try body()
    } catch {
        throw error.storeError
    }
}
