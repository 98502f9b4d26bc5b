#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A key-value store with DynamoDB's data model and semantics: items in
/// partitions ordered by a sort key, conditional writes, all-or-nothing
/// transactions, paginated queries, and TTL expiry.
///
/// An instance is bound to one table. Every implementation passes the same
/// conformance suite (`KeyValueStoreTests`), so code written against this
/// protocol behaves the same on the embedded SQLite store, the in-memory
/// reference, and a DynamoDB backend.
public protocol KeyValueStore: Sendable {
    /// The item at `key`, or `nil` when absent or expired.
    ///
    /// - Parameter consistentRead: as in DynamoDB, read what the latest
    ///   write left, even right after it. Stores whose reads are always
    ///   consistent may use it to pick the cheaper path.
    func getItem(_ key: ItemKey, consistentRead: Bool) async throws(KeyValueStoreError) -> Item?

    /// The items that exist among `keys` (`BatchGetItem`), keyed by key.
    func batchGetItems(_ keys: [ItemKey], consistentRead: Bool) async throws(KeyValueStoreError) -> [ItemKey: Item]

    /// Writes `item` when `condition` holds; returns the replaced item.
    @discardableResult
    func putItem(_ item: Item, condition: Condition?) async throws(KeyValueStoreError) -> Item?

    /// Deletes the item when `condition` holds; returns the deleted item.
    @discardableResult
    func deleteItem(_ key: ItemKey, condition: Condition?) async throws(KeyValueStoreError) -> Item?

    /// Applies `update` when `condition` holds; returns the item as written.
    @discardableResult
    func updateItem(_ key: ItemKey, _ update: Update, condition: Condition?) async throws(KeyValueStoreError) -> Item

    /// One page of the items in a partition, in sort-key order.
    func query(_ query: Query) async throws(KeyValueStoreError) -> QueryPage

    /// Applies every action or none (`TransactWriteItems`). When a condition
    /// fails the error has code ``KeyValueStoreError/Code/transactionCanceled``
    /// and one cancellation reason per action.
    func transactWriteItems(_ actions: [WriteAction]) async throws(KeyValueStoreError)

    /// Reads, decides and writes in one step; see the default
    /// implementation's notes. `prefetching` names the keys the plan is
    /// known to read.
    func readAndWrite<Result: Sendable>(
        prefetching keys: [ItemKey],
        _ plan: @escaping @Sendable (ItemReader) throws(KeyValueStoreError) -> PlannedWrite<Result>
    ) async throws(KeyValueStoreError) -> Result

    /// Puts and deletes without conditions (`BatchWriteItem`).
    func batchWriteItems(_ requests: [BatchWriteRequest]) async throws(KeyValueStoreError)

    /// The most actions one ``transactWriteItems(_:)`` takes (DynamoDB:
    /// 100); callers with more split their work.
    var transactionActionLimit: Int { get }

    /// Up to `limit` items whose time to live has passed but that are still
    /// stored (reads no longer see them), the longest expired first. What
    /// removes them, deleting each under ``Condition/expired``, can change
    /// what depends on them in the same transaction.
    func expiredItems(limit: Int) async throws(KeyValueStoreError) -> [Item]
}

extension KeyValueStore {
    /// No limit, unless a store says otherwise.
    public var transactionActionLimit: Int { .max }

    public func getItem(_ key: ItemKey) async throws(KeyValueStoreError) -> Item? {
        try await getItem(key, consistentRead: false)
    }

    public func batchGetItems(_ keys: [ItemKey]) async throws(KeyValueStoreError) -> [ItemKey: Item] {
        try await batchGetItems(keys, consistentRead: false)
    }

    @discardableResult
    public func putItem(_ item: Item) async throws(KeyValueStoreError) -> Item? {
        try await putItem(item, condition: nil)
    }

    @discardableResult
    public func deleteItem(_ key: ItemKey) async throws(KeyValueStoreError) -> Item? {
        try await deleteItem(key, condition: nil)
    }

    @discardableResult
    public func updateItem(_ key: ItemKey, _ update: Update) async throws(KeyValueStoreError) -> Item {
        try await updateItem(key, update, condition: nil)
    }
}

/// The clock a store uses for TTL: Unix seconds.
public struct StoreClock: Sendable {
    private let read: @Sendable () -> Int64

    public init(_ read: @escaping @Sendable () -> Int64) {
        self.read = read
    }

    /// The current time in Unix seconds.
    public func now() -> Int64 { read() }

    /// The system's wall clock.
    public static let system = StoreClock {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec)
    }
}
