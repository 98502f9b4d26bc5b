/// The primary key of an item: a partition key and a sort key, both strings.
///
/// Keys order and compare by UTF-8 bytes, the order DynamoDB uses for string
/// keys and SQLite uses for `TEXT` under the `BINARY` collation.
public struct ItemKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Groups items; a query reads exactly one partition.
    public var partition: String
    /// Orders items within a partition.
    public var sort: String

    public init(partition: String, sort: String) {
        self.partition = partition
        self.sort = sort
    }

    public static func == (lhs: ItemKey, rhs: ItemKey) -> Bool {
        utf8Equal(lhs.partition, rhs.partition) && utf8Equal(lhs.sort, rhs.sort)
    }

    public func hash(into hasher: inout Hasher) {
        var partition = partition
        var sort = sort
        partition.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        hasher.combine(0xFF as UInt8)  // never part of UTF-8: separates the two keys
        sort.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    public static func < (lhs: ItemKey, rhs: ItemKey) -> Bool {
        if !utf8Equal(lhs.partition, rhs.partition) {
            return lhs.partition.utf8.lexicographicallyPrecedes(rhs.partition.utf8)
        }
        return lhs.sort.utf8.lexicographicallyPrecedes(rhs.sort.utf8)
    }

    public var description: String { "(\(partition), \(sort))" }
}

/// An item: its key and its attributes.
///
/// When the store has a TTL attribute configured (see ``TimeToLive``), an
/// item whose attribute of that name holds an `.integer` of Unix seconds at or
/// before the store's current time is expired: reads and conditions treat it
/// as absent, and a background sweep deletes it.
public struct Item: Sendable, Hashable {
    public var key: ItemKey
    public var attributes: [String: AttributeValue]

    public init(key: ItemKey, attributes: [String: AttributeValue] = [:]) {
        self.key = key
        self.attributes = attributes
    }

    public subscript(name: String) -> AttributeValue? {
        get { attributes[name] }
        set { attributes[name] = newValue }
    }
}

/// Which attribute, if any, holds an item's expiry time (Unix seconds).
public struct TimeToLive: Sendable, Hashable {
    /// The attribute name, `expires_at` by default.
    public var attributeName: String

    public init(attributeName: String = "expires_at") {
        self.attributeName = attributeName
    }

    /// The expiry time of `attributes`, when it has one.
    public func expiry(of attributes: [String: AttributeValue]) -> Int64? {
        attributes[attributeName]?.integerValue
    }

    /// Whether an item with `attributes` is expired at `now` (Unix seconds).
    public func isExpired(_ attributes: [String: AttributeValue], now: Int64) -> Bool {
        guard let expiry = expiry(of: attributes) else { return false }
        return expiry <= now
    }
}

/// Byte-wise equality of two strings' UTF-8 (not Unicode canonical equivalence).
func utf8Equal(_ lhs: String, _ rhs: String) -> Bool {
    var lhs = lhs
    var rhs = rhs
    return lhs.withUTF8 { left in
        rhs.withUTF8 { right in
            left.count == right.count && (left.count == 0 || memcmp(left.baseAddress!, right.baseAddress!, left.count) == 0)
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
