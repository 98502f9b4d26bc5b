/// One action of a transaction (DynamoDB's `TransactWriteItem`).
public enum WriteAction: Sendable, Hashable {
    /// Create or replace the item.
    case put(Item, condition: Condition? = nil)
    /// Delete the item (a no-op when absent, unless the condition says otherwise).
    case delete(ItemKey, condition: Condition? = nil)
    /// Update (or create) the item.
    case update(ItemKey, Update, condition: Condition? = nil)
    /// Only check a condition on the item.
    case conditionCheck(ItemKey, Condition)

    /// The item this action touches.
    public var key: ItemKey {
        switch self {
        case .put(let item, _): return item.key
        case .delete(let key, _), .update(let key, _, _), .conditionCheck(let key, _): return key
        }
    }

    /// The action's condition, if any.
    public var condition: Condition? {
        switch self {
        case .put(_, let condition), .delete(_, let condition), .update(_, _, let condition): return condition
        case .conditionCheck(_, let condition): return condition
        }
    }
}

/// One request of a non-conditional batch write (DynamoDB's `BatchWriteItem`).
public enum BatchWriteRequest: Sendable, Hashable {
    case put(Item)
    case delete(ItemKey)

    public var key: ItemKey {
        switch self {
        case .put(let item): return item.key
        case .delete(let key): return key
        }
    }
}

extension Array where Element == WriteAction {
    /// Rejects what DynamoDB rejects: an empty transaction or two actions on
    /// the same item.
    public func validateTransaction() throws(KeyValueStoreError) {
        if isEmpty { throw .validation("a transaction needs at least one action") }
        var seen = Set<ItemKey>(minimumCapacity: count)
        for action in self where !seen.insert(action.key).inserted {
            throw .validation("a transaction touches \(action.key) more than once")
        }
    }
}
