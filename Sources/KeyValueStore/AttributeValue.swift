/// A typed attribute value, shaped after DynamoDB's attribute types.
///
/// Strings compare by their UTF-8 bytes (as DynamoDB and SQLite do), not by
/// Swift's Unicode canonical equivalence: `"é"` and `"e\u{301}"` are two
/// different values here.
public enum AttributeValue: Sendable {
    case string(String)
    case integer(Int64)
    case double(Double)
    case bool(Bool)
    case binary([UInt8])
    case list([AttributeValue])
    case map([String: AttributeValue])
    case null

    /// The string payload, or `nil` for any other type.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The integer payload, or `nil` for any other type.
    public var integerValue: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    /// The boolean payload, or `nil` for any other type.
    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The binary payload, or `nil` for any other type.
    public var binaryValue: [UInt8]? {
        if case .binary(let value) = self { return value }
        return nil
    }
}

extension AttributeValue: Hashable {
    public static func == (lhs: AttributeValue, rhs: AttributeValue) -> Bool {
        switch (lhs, rhs) {
        case (.string(let a), .string(let b)): return utf8Equal(a, b)
        case (.integer(let a), .integer(let b)): return a == b
        case (.double(let a), .double(let b)): return a == b
        case (.bool(let a), .bool(let b)): return a == b
        case (.binary(let a), .binary(let b)): return a == b
        case (.list(let a), .list(let b)): return a == b
        case (.map(let a), .map(let b)): return a == b
        case (.null, .null): return true
        default: return false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .string(var value):
            hasher.combine(0)
            value.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        case .integer(let value): hasher.combine(1); hasher.combine(value)
        case .double(let value): hasher.combine(2); hasher.combine(value)
        case .bool(let value): hasher.combine(3); hasher.combine(value)
        case .binary(let value): hasher.combine(4); hasher.combine(value)
        case .list(let value): hasher.combine(5); hasher.combine(value)
        case .map(let value): hasher.combine(6); hasher.combine(value)
        case .null: hasher.combine(7)
        }
    }
}

extension AttributeValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}
