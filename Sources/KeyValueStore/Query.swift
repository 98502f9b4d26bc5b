/// A condition on the sort key of a query (DynamoDB's `KeyConditionExpression`
/// sort-key part). Comparisons are by UTF-8 bytes.
public enum SortKeyCondition: Sendable, Hashable {
    case equals(String)
    case beginsWith(String)
    /// Inclusive on both ends.
    case between(String, String)
    case lessThan(String)
    case lessThanOrEqual(String)
    case greaterThan(String)
    case greaterThanOrEqual(String)

    /// Whether `sortKey` satisfies the condition.
    public func matches(_ sortKey: String) -> Bool {
        let key = sortKey.utf8
        switch self {
        case .equals(let value): return key.elementsEqual(value.utf8)
        case .beginsWith(let prefix): return key.starts(with: prefix.utf8)
        case .between(let low, let high):
            return !key.lexicographicallyPrecedes(low.utf8) && !high.utf8.lexicographicallyPrecedes(key)
        case .lessThan(let value): return key.lexicographicallyPrecedes(value.utf8)
        case .lessThanOrEqual(let value): return !value.utf8.lexicographicallyPrecedes(key)
        case .greaterThan(let value): return value.utf8.lexicographicallyPrecedes(key)
        case .greaterThanOrEqual(let value): return !key.lexicographicallyPrecedes(value.utf8)
        }
    }
}

/// A query over one partition (DynamoDB's `Query`).
public struct Query: Sendable, Hashable {
    public var partition: String
    public var sortKey: SortKeyCondition?
    /// At most this many items in the page; `nil` for no limit.
    public var limit: Int?
    /// `true` for ascending sort-key order, `false` for descending.
    public var scanForward: Bool
    /// Continue after this key (the previous page's ``QueryPage/lastEvaluatedKey``).
    public var exclusiveStartKey: ItemKey?

    public init(
        partition: String,
        sortKey: SortKeyCondition? = nil,
        limit: Int? = nil,
        scanForward: Bool = true,
        exclusiveStartKey: ItemKey? = nil
    ) {
        self.partition = partition
        self.sortKey = sortKey
        self.limit = limit
        self.scanForward = scanForward
        self.exclusiveStartKey = exclusiveStartKey
    }

    /// Checks what a store cannot serve.
    public func validate() throws(KeyValueStoreError) {
        if let limit, limit < 1 {
            throw .validation("query limit must be at least 1, got \(limit)")
        }
        if let start = exclusiveStartKey, !start.partition.utf8.elementsEqual(partition.utf8) {
            throw .validation("exclusiveStartKey \(start) is not in the queried partition '\(partition)'")
        }
        if case .between(let low, let high) = sortKey, high.utf8.lexicographicallyPrecedes(low.utf8) {
            throw .validation("between: the lower bound '\(low)' is above the upper bound '\(high)'")
        }
    }
}

/// One page of query results.
public struct QueryPage: Sendable, Hashable {
    public var items: [Item]
    /// Set when the query stopped at its limit: pass it as the next query's
    /// ``Query/exclusiveStartKey``. As in DynamoDB, the next page may be empty.
    public var lastEvaluatedKey: ItemKey?

    public init(items: [Item], lastEvaluatedKey: ItemKey?) {
        self.items = items
        self.lastEvaluatedKey = lastEvaluatedKey
    }
}
