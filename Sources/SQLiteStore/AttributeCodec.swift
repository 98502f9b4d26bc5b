import KeyValueStore

/// The compact binary form in which item attributes are stored in the
/// `attrs` column. Versioned by its first byte.
enum AttributeCodec {
    private static let version: UInt8 = 1

    private enum Tag: UInt8 {
        case null = 0, falseValue, trueValue, integer, double, string, binary, list, map
    }

    static func encode(_ attributes: [String: AttributeValue]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16 + attributes.count * 24)
        out.append(version)
        appendMap(attributes, to: &out)
        return out
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws(KeyValueStoreError) -> [String: AttributeValue] {
        var reader = Reader(bytes: bytes)
        guard let first = reader.byte(), first == version else {
            throw corrupt("unknown attribute encoding version")
        }
        let attributes = try reader.map(depth: 0)
        guard reader.isAtEnd else { throw corrupt("trailing bytes after the attributes") }
        return attributes
    }

    private static func corrupt(_ what: String) -> KeyValueStoreError {
        KeyValueStoreError(code: .corrupt, message: "a stored item cannot be decoded: \(what)")
    }

    // MARK: Encoding

    private static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        out.append(UInt8(value))
    }

    private static func appendBytes<C: Collection>(_ bytes: C, to out: inout [UInt8]) where C.Element == UInt8 {
        appendVarint(UInt64(bytes.count), to: &out)
        out.append(contentsOf: bytes)
    }

    private static func appendMap(_ map: [String: AttributeValue], to out: inout [UInt8]) {
        appendVarint(UInt64(map.count), to: &out)
        for (name, value) in map {
            appendBytes(name.utf8, to: &out)
            append(value, to: &out)
        }
    }

    private static func append(_ value: AttributeValue, to out: inout [UInt8]) {
        switch value {
        case .null:
            out.append(Tag.null.rawValue)
        case .bool(let flag):
            out.append(flag ? Tag.trueValue.rawValue : Tag.falseValue.rawValue)
        case .integer(let number):
            out.append(Tag.integer.rawValue)
            appendVarint(UInt64(bitPattern: (number << 1) ^ (number >> 63)), to: &out)
        case .double(let number):
            out.append(Tag.double.rawValue)
            var bits = number.bitPattern.littleEndian
            withUnsafeBytes(of: &bits) { out.append(contentsOf: $0) }
        case .string(let text):
            out.append(Tag.string.rawValue)
            appendBytes(text.utf8, to: &out)
        case .binary(let bytes):
            out.append(Tag.binary.rawValue)
            appendBytes(bytes, to: &out)
        case .list(let values):
            out.append(Tag.list.rawValue)
            appendVarint(UInt64(values.count), to: &out)
            for element in values { append(element, to: &out) }
        case .map(let map):
            out.append(Tag.map.rawValue)
            appendMap(map, to: &out)
        }
    }

    // MARK: Decoding

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        var isAtEnd: Bool { offset == bytes.count }

        mutating func byte() -> UInt8? {
            guard offset < bytes.count else { return nil }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func varint() throws(KeyValueStoreError) -> UInt64 {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard let byte = byte(), shift < 64 else { throw corrupt("truncated number") }
                result |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return result }
                shift += 7
            }
        }

        mutating func count() throws(KeyValueStoreError) -> Int {
            let value = try varint()
            guard value <= UInt64(bytes.count - offset) else { throw corrupt("length beyond the end") }
            return Int(value)
        }

        mutating func slice() throws(KeyValueStoreError) -> UnsafeRawBufferPointer {
            let length = try count()
            defer { offset += length }
            return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + length])
        }

        mutating func string() throws(KeyValueStoreError) -> String {
            String(decoding: try slice(), as: UTF8.self)
        }

        mutating func map(depth: Int) throws(KeyValueStoreError) -> [String: AttributeValue] {
            let entries = try count()
            var map: [String: AttributeValue] = [:]
            map.reserveCapacity(entries)
            for _ in 0..<entries {
                let name = try string()
                map[name] = try value(depth: depth + 1)
            }
            return map
        }

        mutating func value(depth: Int) throws(KeyValueStoreError) -> AttributeValue {
            guard depth < 64 else { throw corrupt("nesting too deep") }
            guard let raw = byte(), let tag = Tag(rawValue: raw) else { throw corrupt("unknown value tag") }
            switch tag {
            case .null: return .null
            case .falseValue: return .bool(false)
            case .trueValue: return .bool(true)
            case .integer:
                let zigzag = try varint()
                return .integer(Int64(bitPattern: zigzag >> 1) ^ -Int64(bitPattern: zigzag & 1))
            case .double:
                guard bytes.count - offset >= 8 else { throw corrupt("truncated double") }
                var bits: UInt64 = 0
                for index in 0..<8 { bits |= UInt64(bytes[offset + index]) << (8 * UInt64(index)) }
                offset += 8
                return .double(Double(bitPattern: bits))
            case .string: return .string(try string())
            case .binary: return .binary(Array(try slice()))
            case .list:
                let elements = try count()
                var values: [AttributeValue] = []
                values.reserveCapacity(elements)
                for _ in 0..<elements { values.append(try value(depth: depth + 1)) }
                return .list(values)
            case .map: return .map(try map(depth: depth))
            }
        }
    }
}
