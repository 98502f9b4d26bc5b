import Hummingbird
import JSON
import NIOCore
import Notifications

/// Builds the gateway's JSON bodies with the same writer the worker uses.
struct JSONWriterBridge {
    private var writer = JSONWriter(capacity: 256)
    var bytes: [UInt8] { writer.bytes }

    mutating func errorBody(code: String, message: String) {
        writer.raw("{\"error\":{\"code\":")
        writer.string(code)
        writer.raw(",\"message\":")
        writer.string(message)
        writer.raw("}}")
    }

    /// `{"type":"hello","user":…,"unread":N}`
    mutating func hello(user: String, unread: Int64) {
        writer.raw("{\"type\":\"hello\",\"user\":")
        writer.string(user)
        writer.raw(",\"unread\":")
        writer.integer(unread)
        writer.raw("}")
    }

    /// `{"items":[…],"next":…,"unread":N}`
    mutating func feed(_ page: FeedPage, unread: Int64) {
        self.page(page.items.map(\.json), next: page.next, "unread")
        writer.integer(unread)
        writer.raw("}")
    }

    /// `{"items":[…],"next":…,"actor_count":N}`
    mutating func actors(_ page: ActorPage) {
        self.page(page.items.map(\.json), next: page.next, "actor_count")
        writer.integer(page.count)
        writer.raw("}")
    }

    /// `{"items":[…],"next":…,"room":…}`: a page of a room's history.
    mutating func roomFeed(_ page: FeedPage, room: Room) {
        self.page(page.items.map(\.json), next: page.next, "room")
        writer.string(room.name)
        writer.raw("}")
    }

    /// `{"items":[…],"next":<cursor or null>,"<name>":`: one page of a
    /// list, up to the value of its last field, which the caller writes
    /// and closes.
    private mutating func page(_ items: [[UInt8]], next: String?, _ name: StaticString) {
        writer.raw("{\"items\":[")
        for (index, item) in items.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.bytes.append(contentsOf: item)
        }
        writer.raw("],\"next\":")
        if let next { writer.string(next) } else { writer.raw("null") }
        writer.raw(",\"")
        writer.raw(name)
        writer.raw("\":")
    }

    /// `{"type":"error","message":…}`: a client frame the gateway could not take.
    mutating func clientError(_ message: String) {
        writer.raw("{\"type\":\"error\",\"message\":")
        writer.string(message)
        writer.raw("}")
    }

    /// `{"type":"quiet_hours.summary","count":N,"first":…,"last":…}`
    mutating func quietHoursSummary(count: Int, first: String?, last: String?) {
        writer.raw("{\"type\":\"quiet_hours.summary\",\"count\":")
        writer.integer(Int64(count))
        if let first { writer.raw(",\"first\":"); writer.string(first) }
        if let last { writer.raw(",\"last\":"); writer.string(last) }
        writer.raw("}")
    }

    /// `{"type":"preferences.updated","preferences":{…}}`
    mutating func preferencesUpdated(_ preferences: Preferences) {
        writer.raw("{\"type\":\"preferences.updated\",\"preferences\":")
        writer.bytes.append(contentsOf: preferences.json)
        writer.raw("}")
    }

    /// `{"type":"joined","room":…}`, with `"reset":true` when the room's
    /// replay was too long to send (the client reloads the room's history).
    mutating func joined(_ room: String, reset: Bool = false) {
        writer.raw("{\"type\":\"joined\",\"room\":")
        writer.string(room)
        if reset { writer.raw(",\"reset\":true") }
        writer.raw("}")
    }

    /// `{"type":"left","room":…}`
    mutating func left(_ room: String) {
        writer.raw("{\"type\":\"left\",\"room\":")
        writer.string(room)
        writer.raw("}")
    }

    /// `{"<name>":N}`
    mutating func count(_ name: StaticString, _ value: Int64) {
        writer.raw("{\"")
        writer.raw(name)
        writer.raw("\":")
        writer.integer(value)
        writer.raw("}")
    }

    mutating func raw(_ text: StaticString) { writer.raw(text) }
    mutating func string(_ text: String) { writer.string(text) }
    mutating func integer(_ value: Int64) { writer.integer(value) }
}

/// `{"type":"reset"}`: the client must reload its feed.
let resetFrame = Array(#"{"type":"reset"}"#.utf8)

/// A 200 response with a JSON body.
func jsonResponse(_ bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
    Response(
        status: status,
        headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
        body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
}

/// The notification id of a `notification.created` frame (as the worker
/// writes them), or `nil` for any other frame.
func createdNotificationID(_ frame: [UInt8]) -> String? {
    notificationID(frame, after: createdPrefix)
}

/// What identifies a created, deleted or updated message, which never
/// legitimately repeats: `c` or `d` and the notification id; an updated
/// message whole (a group keeps its id while actors leave, and each
/// leaving changes the body). `nil` for other messages.
func repeatKey(_ frame: [UInt8]) -> String? {
    if let id = notificationID(frame, after: createdPrefix) { return "c" + id }
    if let id = notificationID(frame, after: deletedPrefix) { return "d" + id }
    if frame.starts(with: updatedPrefix) { return "u" + String(decoding: frame, as: UTF8.self) }
    return nil
}

/// The id of a new notification: of a `notification.created` frame, or of
/// a `notification.updated` one that moved a group to the top (it has
/// `replaces`); `nil` for any other frame.
func newNotificationID(_ frame: [UInt8]) -> String? {
    if let id = createdNotificationID(frame) { return id }
    // `…,"replaces":"<26 characters>"}`
    let tail = replacesMarker.count + 28
    guard frame.count > tail, frame[(frame.count - tail)..<(frame.count - 28)].elementsEqual(replacesMarker) else { return nil }
    return updatedNotificationID(frame)
}

private let replacesMarker = Array(#","replaces":""#.utf8)

/// Whether a notification frame carries `"priority":"high"` (such frames
/// go through quiet hours).
func isHighPriority(_ frame: [UInt8]) -> Bool {
    let marker = highPriorityMarker
    guard frame.count >= marker.count else { return false }
    var index = 0
    while index + marker.count <= frame.count {
        if frame[index] == marker[0], frame[index..<index + marker.count].elementsEqual(marker) { return true }
        index += 1
    }
    return false
}

private let highPriorityMarker = Array(#","priority":"high""#.utf8)

/// `{"type":"preferences.updated",…`
let preferencesUpdatedPrefix = Array(#"{"type":"preferences.updated""#.utf8)

/// The notification id of a `notification.updated` frame, or `nil` for any other frame.
func updatedNotificationID(_ frame: [UInt8]) -> String? {
    notificationID(frame, after: updatedPrefix)
}

/// The room and notification id of a room's `notification.created` or
/// `notification.updated` frame (`{"type":…,"room":"<name>","notification":{"id":"…`),
/// or `nil` for any other frame.
func roomNotificationID(_ frame: [UInt8]) -> (room: Room, id: String)? {
    let prefix: [UInt8]
    if frame.starts(with: roomCreatedPrefix) {
        prefix = roomCreatedPrefix
    } else if frame.starts(with: roomUpdatedPrefix) {
        prefix = roomUpdatedPrefix
    } else {
        return nil
    }
    // Room names hold no quote or backslash.
    guard let quote = frame[prefix.count...].firstIndex(of: UInt8(ascii: "\"")),
          let room = Room(String(decoding: frame[prefix.count..<quote], as: UTF8.self)) else { return nil }
    let idStart = quote + roomNotificationMarker.count
    guard frame.count >= idStart + 26, frame[quote..<idStart].elementsEqual(roomNotificationMarker) else { return nil }
    return (room, String(decoding: frame[idStart..<idStart + 26], as: UTF8.self))
}

let roomCreatedPrefix = Array(#"{"type":"notification.created","room":""#.utf8)
private let roomUpdatedPrefix = Array(#"{"type":"notification.updated","room":""#.utf8)
private let roomNotificationMarker = Array(#"","notification":{"id":""#.utf8)

private let createdPrefix = Array(#"{"type":"notification.created","notification":{"id":""#.utf8)
private let updatedPrefix = Array(#"{"type":"notification.updated","notification":{"id":""#.utf8)
private let deletedPrefix = Array(#"{"type":"notification.deleted","id":""#.utf8)

/// The 26-character id right after `prefix`, as the worker writes it.
private func notificationID(_ frame: [UInt8], after prefix: [UInt8]) -> String? {
    guard frame.count >= prefix.count + 26, frame.starts(with: prefix) else { return nil }
    return String(decoding: frame[prefix.count..<prefix.count + 26], as: UTF8.self)
}
