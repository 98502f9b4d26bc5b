import JSON
import KeyValueStore

/// Builds DynamoDB expressions with placeholders (`#n0`, `:v0`) for every
/// name and value, so no attribute name is ever a reserved word and no
/// value is spliced into text.
///
/// Conditions see an expired item as absent, as every ``KeyValueStore``
/// does: DynamoDB keeps expired items until its own TTL process removes
/// them (hours to days later), so each condition is written over "live"
/// (stored and not expired) rather than over "exists".
struct Expressions {
    private(set) var names: [String: JSONValue] = [:]
    private(set) var values: [String: JSONValue] = [:]
    private var placeholders: [String: String] = [:]
    private let timeToLive: TimeToLive?
    private let now: Int64

    init(timeToLive: TimeToLive?, now: Int64) {
        self.timeToLive = timeToLive
        self.now = now
    }

    mutating func name(_ name: String) -> String {
        if let placeholder = placeholders[name] { return placeholder }
        let placeholder = "#n\(placeholders.count)"
        placeholders[name] = placeholder
        names[placeholder] = .string(name)
        return placeholder
    }

    mutating func value(_ value: AttributeValue) throws(KeyValueStoreError) -> String {
        try wireValue(WireFormat.encode(value))
    }

    private mutating func wireValue(_ value: JSONValue) -> String {
        let placeholder = ":v\(values.count)"
        values[placeholder] = value
        return placeholder
    }

    /// The placeholders as request members (left out when empty, as
    /// DynamoDB rejects empty maps).
    func members(into request: inout [String: JSONValue]) {
        if !names.isEmpty { request["ExpressionAttributeNames"] = .object(names) }
        if !values.isEmpty { request["ExpressionAttributeValues"] = .object(values) }
    }

    // MARK: Conditions

    /// The stored item's time to live has passed.
    mutating func expired() -> String {
        guard let timeToLive else {
            let key = name(TableLayout.partitionAttribute)
            return "(attribute_exists(\(key)) AND attribute_not_exists(\(key)))"  // never
        }
        return "\(name(timeToLive.attributeName)) <= \(wireValue(.object(["N": .string(String(now))])))"
    }

    /// The item is stored and not expired.
    mutating func live() -> String {
        let exists = "attribute_exists(\(name(TableLayout.partitionAttribute)))"
        guard timeToLive != nil else { return exists }
        return "(\(exists) AND NOT (\(expired())))"
    }

    /// The item is absent or expired.
    mutating func absent() -> String {
        let missing = "attribute_not_exists(\(name(TableLayout.partitionAttribute)))"
        guard timeToLive != nil else { return missing }
        return "(\(missing) OR \(expired()))"
    }

    /// Not an expired item: absent or live. Guards an update, which would
    /// otherwise keep an expired item's attributes.
    mutating func notExpired() -> String? {
        guard timeToLive != nil else { return nil }
        return "NOT (\(expired()))"
    }

    /// `condition` as a `ConditionExpression`; `nil` when it always holds.
    mutating func condition(_ condition: Condition) throws(KeyValueStoreError) -> String? {
        switch condition {
        case .itemExists: return live()
        case .itemNotExists: return absent()
        case .attributeExists(let attribute): return "(\(live()) AND attribute_exists(\(name(attribute))))"
        case .attributeNotExists(let attribute): return "(\(absent()) OR attribute_not_exists(\(name(attribute))))"
        case .equals(let attribute, let expected): return "(\(live()) AND \(name(attribute)) = \(try value(expected)))"
        case .expired: return expired()
        case .and(let conditions):
            var parts: [String] = []
            for condition in conditions {
                if let part = try self.condition(condition) { parts.append(part) }
            }
            return Self.all(parts)
        }
    }

    /// Both parts, either of which may always hold (`nil`).
    static func all(_ parts: [String?]) -> String? {
        let present = parts.compactMap { $0 }
        switch present.count {
        case 0: return nil
        case 1: return present[0]
        default: return "(" + present.joined(separator: " AND ") + ")"
        }
    }

    // MARK: Updates

    /// `update` as an `UpdateExpression`; `nil` when it changes nothing (the
    /// item is still created when absent).
    ///
    /// Our ``Update`` removes, then sets, then adds; DynamoDB rejects an
    /// attribute named in two clauses, so overlaps are folded first: set
    /// wins over remove, and an add after a remove or a set becomes a set.
    mutating func update(_ update: Update, key: ItemKey) throws(KeyValueStoreError) -> String? {
        var set = update.set
        var add = update.add
        for (attribute, delta) in update.add {
            if update.set[attribute] != nil {
                guard case .integer(let base) = update.set[attribute] else {
                    throw KeyValueStoreError(code: .validation, message: "ADD on attribute '\(attribute)' of \(key), which is not an integer")
                }
                let (sum, overflow) = base.addingReportingOverflow(delta)
                if overflow {
                    throw KeyValueStoreError(code: .validation, message: "ADD on attribute '\(attribute)' of \(key) overflows a 64-bit integer")
                }
                set[attribute] = .integer(sum)
                add[attribute] = nil
            } else if update.remove.contains(attribute) {
                set[attribute] = .integer(delta)
                add[attribute] = nil
            }
        }
        let remove = update.remove.subtracting(set.keys)

        var clauses: [String] = []
        if !set.isEmpty {
            var assignments: [String] = []
            for (attribute, newValue) in set.sorted(by: { $0.key < $1.key }) {
                assignments.append("\(name(attribute)) = \(try value(newValue))")
            }
            clauses.append("SET " + assignments.joined(separator: ", "))
        }
        if !remove.isEmpty {
            clauses.append("REMOVE " + remove.sorted().map { name($0) }.joined(separator: ", "))
        }
        if !add.isEmpty {
            var additions: [String] = []
            for (attribute, delta) in add.sorted(by: { $0.key < $1.key }) {
                additions.append("\(name(attribute)) \(try value(.integer(delta)))")
            }
            clauses.append("ADD " + additions.joined(separator: ", "))
        }
        for attribute in Array(set.keys) + Array(remove) + Array(add.keys)
        where attribute == TableLayout.partitionAttribute || attribute == TableLayout.sortAttribute {
            throw KeyValueStoreError(code: .validation, message: "the attribute name '\(attribute)' of \(key) is reserved for the table's key")
        }
        return clauses.isEmpty ? nil : clauses.joined(separator: " ")
    }

    // MARK: Queries

    /// The `KeyConditionExpression` of a query.
    mutating func keyCondition(partition: String, sortKey: SortKeyCondition?) throws(KeyValueStoreError) -> String {
        let partitionMatch = "\(name(TableLayout.partitionAttribute)) = \(try value(.string(partition)))"
        guard let sortKey, sortKey != .beginsWith("") else { return partitionMatch }
        let sort = name(TableLayout.sortAttribute)
        let match: String
        switch sortKey {
        case .equals(let bound): match = "\(sort) = \(try value(.string(bound)))"
        case .beginsWith(let prefix): match = "begins_with(\(sort), \(try value(.string(prefix))))"
        case .between(let low, let high): match = "\(sort) BETWEEN \(try value(.string(low))) AND \(try value(.string(high)))"
        case .lessThan(let bound): match = "\(sort) < \(try value(.string(bound)))"
        case .lessThanOrEqual(let bound): match = "\(sort) <= \(try value(.string(bound)))"
        case .greaterThan(let bound): match = "\(sort) > \(try value(.string(bound)))"
        case .greaterThanOrEqual(let bound): match = "\(sort) >= \(try value(.string(bound)))"
        }
        return partitionMatch + " AND " + match
    }
}
