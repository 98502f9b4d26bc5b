import JSON
import Notifications

/// A frame a WebSocket client sends: a receipt for notifications it
/// received (`{"type":"ack","ids":[…]}`) or showed (`{"type":"seen","ids":[…]}`),
/// or joining or leaving a room (`{"type":"join","room":"channel:<id>","since":…}`,
/// `{"type":"leave","room":…}`).
enum ClientFrame: Sendable, Hashable {
    case receipt(Receipt.Kind, [String])
    /// `since`: replay the room's notifications created after this id.
    case join(RoomName, since: String?)
    case leave(RoomName)

    /// The most ids one receipt frame or request carries.
    static let maxIDs = 1_000

    static func parse(_ bytes: [UInt8]) -> Result<ClientFrame, ClientFrameError> {
        guard case .object(let object)? = try? JSONParser.parse(bytes) else {
            return .failure(ClientFrameError(#"frames are JSON objects such as {"type":"ack","ids":[…]}"#))
        }
        guard case .string(let type)? = object["type"] else {
            return .failure(ClientFrameError("a frame needs a type: ack, seen, join or leave"))
        }
        let kind: Receipt.Kind
        switch type {
        case "ack": kind = .delivered
        case "seen": kind = .seen
        case "join", "leave":
            guard case .string(let text)? = object["room"], let room = RoomName(text) else {
                return .failure(ClientFrameError("\(type) needs a room: channel:<id>, global or user:<id>"))
            }
            if type == "leave" { return .success(.leave(room)) }
            switch object["since"] {
            case nil, .null?: return .success(.join(room, since: nil))
            case .string(let since)? where NotificationIDGenerator.isValid(since): return .success(.join(room, since: since))
            default: return .failure(ClientFrameError("since must be a notification id the room sent"))
            }
        default: return .failure(ClientFrameError("unknown frame type '\(type.prefix(32))': the gateway takes ack, seen, join and leave"))
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

/// A room as clients name it: a broadcast room (public: anyone signed in
/// may join or read it), or `user:<id>`, a user's own feed (private: only
/// that user).
enum RoomName: Sendable, Hashable {
    case room(Room)
    case user(String)

    init?(_ text: some StringProtocol) {
        if text.hasPrefix("user:") {
            let id = String(text.dropFirst(5))
            guard EventValidator.isValidUserID(id) else { return nil }
            self = .user(id)
        } else if let room = Room(text) {
            self = .room(room)
        } else {
            return nil
        }
    }

    var name: String {
        switch self {
        case .room(let room): room.name
        case .user(let id): "user:" + id
        }
    }
}
