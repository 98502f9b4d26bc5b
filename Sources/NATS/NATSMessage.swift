import CNATS

/// Message headers, in the order they were set. Names compare exactly as
/// given (nats.c is case-sensitive).
public struct NATSHeaders: Sendable, Hashable, ExpressibleByDictionaryLiteral {
    public private(set) var fields: [(name: String, value: String)]

    public init(_ fields: [(name: String, value: String)] = []) {
        self.fields = fields
    }

    public init(dictionaryLiteral elements: (String, String)...) {
        self.fields = elements.map { (name: $0.0, value: $0.1) }
    }

    /// The first value of `name`.
    public subscript(name: String) -> String? {
        fields.first { $0.name == name }?.value
    }

    public var isEmpty: Bool { fields.isEmpty }

    /// Appends a value (headers may repeat).
    public mutating func append(_ name: String, _ value: String) {
        fields.append((name: name, value: value))
    }

    public static func == (lhs: NATSHeaders, rhs: NATSHeaders) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.name == $1.name && $0.value == $1.value }
    }

    public func hash(into hasher: inout Hasher) {
        for field in fields {
            hasher.combine(field.name)
            hasher.combine(field.value)
        }
    }
}

/// A message received on a core NATS subscription, copied out of nats.c.
public struct NATSMessage: Sendable {
    public let subject: String
    public let reply: String?
    public let headers: NATSHeaders
    public let payload: [UInt8]

    public init(subject: String, reply: String? = nil, headers: NATSHeaders = [:], payload: [UInt8]) {
        self.subject = subject
        self.reply = reply
        self.headers = headers
        self.payload = payload
    }

    /// Copies what we need out of `message`; does not destroy it.
    init(copying message: OpaquePointer) {
        subject = String(cString: natsMsg_GetSubject(message))
        reply = natsMsg_GetReply(message).map { String(cString: $0) }
        headers = copyHeaders(message)
        payload = copyPayload(message)
    }
}

func copyPayload(_ message: OpaquePointer) -> [UInt8] {
    let count = Int(natsMsg_GetDataLength(message))
    guard count > 0, let data = natsMsg_GetData(message) else { return [] }
    return data.withMemoryRebound(to: UInt8.self, capacity: count) {
        Array(UnsafeBufferPointer(start: $0, count: count))
    }
}

func copyHeaders(_ message: OpaquePointer) -> NATSHeaders {
    var keys: UnsafeMutablePointer<UnsafePointer<CChar>?>?
    var count: Int32 = 0
    guard natsMsgHeader_Keys(message, &keys, &count) == NATS_OK, let keys else { return [:] }
    defer { free(keys) }
    var headers = NATSHeaders()
    for index in 0..<Int(count) {
        guard let key = keys[index] else { continue }
        var values: UnsafeMutablePointer<UnsafePointer<CChar>?>?
        var valueCount: Int32 = 0
        guard natsMsgHeader_Values(message, key, &values, &valueCount) == NATS_OK, let values else { continue }
        let name = String(cString: key)
        for valueIndex in 0..<Int(valueCount) {
            if let value = values[valueIndex] { headers.append(name, String(cString: value)) }
        }
        free(values)
    }
    return headers
}

/// Creates a `natsMsg` with headers; the caller destroys it.
func makeMessage(subject: String, reply: String?, headers: NATSHeaders, payload: [UInt8]) throws(NATSError) -> OpaquePointer {
    var message: OpaquePointer?
    let status = payload.withUnsafeBytes { bytes in
        natsMsg_Create(&message, subject, reply, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(bytes.count))
    }
    try check(status, "create message", context: "subject \(subject)")
    guard let message else {
        throw NATSError(code: .other, operation: "create message", message: "nats.c returned no message", context: "subject \(subject)")
    }
    for field in headers.fields {
        let added = natsMsgHeader_Add(message, field.name, field.value)
        if added != NATS_OK {
            natsMsg_Destroy(message)
            try check(added, "set header \(field.name)", context: "subject \(subject)")
        }
    }
    return message
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
