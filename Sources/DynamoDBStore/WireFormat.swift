import Foundation
import JSON
import KeyValueStore

/// Attribute values in DynamoDB's JSON wire format (`{"S": "…"}`,
/// `{"N": "42"}`, …) and back.
///
/// `.integer` and `.double` both travel as `N`. A number without a fraction
/// or exponent that fits 64 bits reads back as `.integer`, anything else as
/// `.double`; DynamoDB normalises numbers, so a `.double` with an integral
/// value (`2.0`) reads back as `.integer(2)`. notify stores no doubles.
enum WireFormat {
    static func encode(_ value: AttributeValue) throws(KeyValueStoreError) -> JSONValue {
        switch value {
        case .string(let text): return .object(["S": .string(text)])
        case .integer(let number): return .object(["N": .string(String(number))])
        case .double(let number):
            guard number.isFinite else {
                throw KeyValueStoreError(code: .validation, message: "DynamoDB numbers must be finite, got \(number)")
            }
            return .object(["N": .string(String(number))])
        case .bool(let flag): return .object(["BOOL": .bool(flag)])
        case .binary(let bytes): return .object(["B": .string(Data(bytes).base64EncodedString())])
        case .null: return .object(["NULL": .bool(true)])
        case .list(let elements):
            var encoded: [JSONValue] = []
            encoded.reserveCapacity(elements.count)
            for element in elements { encoded.append(try encode(element)) }
            return .object(["L": .array(encoded)])
        case .map(let members):
            return .object(["M": .object(try encode(members))])
        }
    }

    static func encode(_ attributes: [String: AttributeValue]) throws(KeyValueStoreError) -> [String: JSONValue] {
        var encoded: [String: JSONValue] = [:]
        encoded.reserveCapacity(attributes.count)
        for (name, value) in attributes { encoded[name] = try encode(value) }
        return encoded
    }

    static func decode(_ value: JSONValue) throws(KeyValueStoreError) -> AttributeValue {
        guard case .object(let members) = value, members.count == 1, let (type, payload) = members.first else {
            throw malformed("an attribute value is not a one-member object")
        }
        switch (type, payload) {
        case ("S", .string(let text)): return .string(text)
        case ("N", .string(let digits)):
            if let number = Int64(digits) { return .integer(number) }
            if let number = Double(digits) { return .double(number) }
            throw malformed("the number '\(digits)' cannot be read")
        case ("BOOL", .bool(let flag)): return .bool(flag)
        case ("NULL", _): return .null
        case ("B", .string(let text)):
            guard let data = Data(base64Encoded: text) else { throw malformed("a binary value is not base64") }
            return .binary(Array(data))
        case ("L", .array(let elements)):
            var decoded: [AttributeValue] = []
            decoded.reserveCapacity(elements.count)
            for element in elements { decoded.append(try decode(element)) }
            return .list(decoded)
        case ("M", .object(let members)):
            return .map(try decode(members))
        default:
            throw malformed("attributes of type '\(type)' are not supported (string sets and number sets are not used)")
        }
    }

    static func decode(_ members: [String: JSONValue]) throws(KeyValueStoreError) -> [String: AttributeValue] {
        var decoded: [String: AttributeValue] = [:]
        decoded.reserveCapacity(members.count)
        for (name, value) in members { decoded[name] = try decode(value) }
        return decoded
    }

    static func malformed(_ message: String) -> KeyValueStoreError {
        KeyValueStoreError(code: .internalError, message: "DynamoDB sent a response notify cannot read: \(message)")
    }
}

/// How items map onto the table's attributes: the partition and sort keys
/// are the string attributes `pk` and `sk`; every other attribute is stored
/// as itself, so the TTL attribute is one DynamoDB's own TTL can use.
struct TableLayout: Sendable {
    static let partitionAttribute = "pk"
    static let sortAttribute = "sk"

    let tableName: String

    func key(_ key: ItemKey) throws(KeyValueStoreError) -> JSONValue {
        try Self.validate(key)
        return .object([
            Self.partitionAttribute: .object(["S": .string(key.partition)]),
            Self.sortAttribute: .object(["S": .string(key.sort)]),
        ])
    }

    func item(_ item: Item) throws(KeyValueStoreError) -> JSONValue {
        try Self.validate(item.key)
        for name in [Self.partitionAttribute, Self.sortAttribute] where item.attributes[name] != nil {
            throw KeyValueStoreError(
                code: .validation, message: "the attribute name '\(name)' of \(item.key) is reserved for the table's key")
        }
        var members = try WireFormat.encode(item.attributes)
        members[Self.partitionAttribute] = .object(["S": .string(item.key.partition)])
        members[Self.sortAttribute] = .object(["S": .string(item.key.sort)])
        return .object(members)
    }

    /// An item from its wire form, or `nil` for `nil`.
    func item(_ value: JSONValue?) throws(KeyValueStoreError) -> Item? {
        guard let value else { return nil }
        guard var members = value.objectValue else { throw WireFormat.malformed("an item is not an object") }
        guard let partition = members.removeValue(forKey: Self.partitionAttribute)?["S"]?.stringValue,
              let sort = members.removeValue(forKey: Self.sortAttribute)?["S"]?.stringValue else {
            throw KeyValueStoreError(
                code: .incompatible,
                message: "table '\(tableName)' holds an item without string keys '\(Self.partitionAttribute)' and '\(Self.sortAttribute)'; it is not a notify table")
        }
        return Item(key: ItemKey(partition: partition, sort: sort), attributes: try WireFormat.decode(members))
    }

    func itemKey(_ value: JSONValue?) throws(KeyValueStoreError) -> ItemKey? {
        guard let value else { return nil }
        guard let partition = value[Self.partitionAttribute]?["S"]?.stringValue,
              let sort = value[Self.sortAttribute]?["S"]?.stringValue else {
            throw WireFormat.malformed("a key is not a pair of strings '\(Self.partitionAttribute)' and '\(Self.sortAttribute)'")
        }
        return ItemKey(partition: partition, sort: sort)
    }

    static func validate(_ key: ItemKey) throws(KeyValueStoreError) {
        if key.partition.isEmpty {
            throw KeyValueStoreError(code: .validation, message: "the partition key of \(key) is empty")
        }
        if key.sort.isEmpty {
            throw KeyValueStoreError(code: .validation, message: "the sort key of \(key) is empty")
        }
    }
}
