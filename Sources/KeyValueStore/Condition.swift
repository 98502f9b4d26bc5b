/// A condition on the current state of one item, evaluated atomically with
/// the write it guards (DynamoDB's `ConditionExpression`).
public indirect enum Condition: Sendable, Hashable {
    /// The item exists (`attribute_exists(<partition key>)`).
    case itemExists
    /// The item does not exist (`attribute_not_exists(<partition key>)`).
    case itemNotExists
    /// The item exists and has the attribute.
    case attributeExists(String)
    /// The item does not exist or lacks the attribute.
    case attributeNotExists(String)
    /// The item exists and the attribute equals the value.
    case equals(String, AttributeValue)
    /// Every condition holds.
    case and([Condition])
    /// The item is stored but its time to live has passed. A sweep makes
    /// its delete conditional on this, so an expired item is removed once
    /// and an item written over it since is kept; every other condition
    /// sees an expired item as absent.
    case expired

    /// Whether the condition holds for `item`, the item as stored (`nil`
    /// when absent); `expired` says whether its time to live has passed.
    public func isSatisfied(by item: Item?, expired: Bool = false) -> Bool {
        let live = expired ? nil : item
        switch self {
        case .itemExists:
            return live != nil
        case .itemNotExists:
            return live == nil
        case .attributeExists(let name):
            return live?.attributes[name] != nil
        case .attributeNotExists(let name):
            return live?.attributes[name] == nil
        case .equals(let name, let value):
            guard let current = live?.attributes[name] else { return false }
            return current == value
        case .and(let conditions):
            return conditions.allSatisfy { $0.isSatisfied(by: item, expired: expired) }
        case .expired:
            return item != nil && expired
        }
    }

    /// A condition that holds exactly when the item still has these
    /// attributes (optimistic concurrency on a previously read item).
    public static func matches(_ item: Item) -> Condition {
        let checks = item.attributes.sorted { $0.key < $1.key }.map { Condition.equals($0.key, $0.value) }
        return .and([.itemExists] + checks)
    }
}

/// Changes to one item (DynamoDB's `UpdateExpression`): `SET`, `ADD` on
/// integers, `REMOVE`. Applied to a missing item, it creates it.
public struct Update: Sendable, Hashable {
    /// Attributes to set, replacing any current value.
    public var set: [String: AttributeValue]
    /// Integer attributes to add to; a missing attribute counts as 0.
    public var add: [String: Int64]
    /// Attributes to remove.
    public var remove: Set<String>

    public init(set: [String: AttributeValue] = [:], add: [String: Int64] = [:], remove: Set<String> = []) {
        self.set = set
        self.add = add
        self.remove = remove
    }

    /// The item after applying this update to `current` (or to an empty item
    /// with `key` when `current` is `nil`).
    public func applied(to current: Item?, key: ItemKey) throws(KeyValueStoreError) -> Item {
        var item = current ?? Item(key: key)
        for name in remove { item.attributes[name] = nil }
        for (name, value) in set { item.attributes[name] = value }
        for (name, delta) in add {
            switch item.attributes[name] {
            case nil:
                item.attributes[name] = .integer(delta)
            case .integer(let value)?:
                let (sum, overflow) = value.addingReportingOverflow(delta)
                if overflow {
                    throw KeyValueStoreError.validation("ADD on attribute '\(name)' of \(key) overflows a 64-bit integer")
                }
                item.attributes[name] = .integer(sum)
            case .some:
                throw KeyValueStoreError.validation("ADD on attribute '\(name)' of \(key), which is not an integer")
            }
        }
        return item
    }
}
