/// Consistent reads for the planning step of
/// ``KeyValueStore/readAndWrite(prefetching:_:)``.
///
/// Used on the thread that runs the plan, during the plan only.
public struct ItemReader {
    private let read: ([ItemKey]) throws(KeyValueStoreError) -> [ItemKey: Item]

    public init(_ read: @escaping ([ItemKey]) throws(KeyValueStoreError) -> [ItemKey: Item]) {
        self.read = read
    }

    /// The items that exist among `keys`, as the latest writes left them
    /// (expired items are absent).
    public func items(_ keys: some Collection<ItemKey>) throws(KeyValueStoreError) -> [ItemKey: Item] {
        if keys.isEmpty { return [:] }
        return try read(Array(keys))
    }
}

/// What a plan decided: the transaction to write and what to return.
public struct PlannedWrite<Result: Sendable> {
    /// Written all or nothing, as by ``KeyValueStore/transactWriteItems(_:)``;
    /// empty writes nothing.
    public var actions: [WriteAction]
    public var result: Result

    public init(actions: [WriteAction], result: Result) {
        self.actions = actions
        self.result = result
    }
}

/// Why the generic ``KeyValueStore/readAndWrite(prefetching:_:)`` runs a
/// plan again: it read keys that were not fetched yet.
private final class MissingKeys {
    var keys: [ItemKey] = []
}

extension KeyValueStore {
    /// Reads, decides and writes in one step: `plan` reads what it needs
    /// through its ``ItemReader`` and returns a transaction whose actions
    /// carry conditions on what it read.
    ///
    /// This default (what a DynamoDB backend does) reads `prefetching`,
    /// runs the plan on what was read and writes its actions with
    /// ``transactWriteItems(_:)``; a plan that asks for keys not read yet
    /// is run again once they are, so anything it does besides returning
    /// must be harmless to repeat (the repository's plan only draws fresh
    /// notification ids). A concurrent writer makes the transaction fail its
    /// conditions (the caller plans again). Stores with a write lock
    /// (SQLite) run all of it under the lock in one step, where the
    /// conditions cannot fail and nothing waits between reading and writing.
    public func readAndWrite<Result: Sendable>(
        prefetching keys: [ItemKey],
        _ plan: @escaping @Sendable (ItemReader) throws(KeyValueStoreError) -> PlannedWrite<Result>
    ) async throws(KeyValueStoreError) -> Result {
        var known = try await batchGetItems(keys, consistentRead: true)
        var fetched = Set(keys)
        while true {
            let missing = MissingKeys()
            let reader = ItemReader { [known, fetched] requested in
                var found: [ItemKey: Item] = [:]
                for key in requested {
                    if let item = known[key] { found[key] = item } else if !fetched.contains(key) { missing.keys.append(key) }
                }
                return found
            }
            let planned = try plan(reader)
            if missing.keys.isEmpty {
                if !planned.actions.isEmpty { try await transactWriteItems(planned.actions) }
                return planned.result
            }
            known.merge(try await batchGetItems(missing.keys, consistentRead: true)) { _, new in new }
            fetched.formUnion(missing.keys)
        }
    }
}
