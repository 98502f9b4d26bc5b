import JSON
import Notifications

/// A frame a WebSocket client sends: a receipt for notifications it
/// received (`{"type":"ack","ids":[…]}`) or showed (`{"type":"seen","ids":[…]}`).
enum ClientFrame: Sendable, Hashable {
    case receipt(Receipt.Kind, [String])

    /// The most ids one receipt frame or request carries.
    static let maxIDs = 1_000

    static func parse(_ bytes: [UInt8]) -> Result<ClientFrame, ClientFrameError> {
        guard case .object(let object)? = try? JSONParser.parse(bytes) else {
            return .failure(ClientFrameError(#"frames are JSON objects such as {"type":"ack","ids":[…]}"#))
        }
        guard case .string(let type)? = object["type"] else {
            return .failure(ClientFrameError("a frame needs a type: ack or seen"))
        }
        let kind: Receipt.Kind
        switch type {
        case "ack": kind = .delivered
        case "seen": kind = .seen
        default: return .failure(ClientFrameError("unknown frame type '\(type.prefix(32))': the gateway takes ack and seen"))
        }
        return ids(object["ids"], name: "ids").map { .receipt(kind, $0) }
    }

    /// 1 to ``maxIDs`` notification ids from `value`.
    static func ids(_ value: JSONValue?, name: String) -> Result<[String], ClientFrameError> {
        guard case .array(let values)? = value, !values.isEmpty, values.count <= maxIDs else {
            return .failure(ClientFrameError("\(name) must hold 1 to \(maxIDs) notification ids"))
        }
        var ids: [String] = []
        ids.reserveCapacity(values.count)
        for value in values {
            guard case .string(let id) = value, NotificationIDGenerator.isValid(id) else {
                return .failure(ClientFrameError("\(name) must hold notification ids"))
            }
            ids.append(id)
        }
        return .success(ids)
    }
}

/// What was wrong with a client's frame, in words.
struct ClientFrameError: Error, Sendable {
    let message: String

    init(_ message: String) {
        self.message = message
    }
}
