import Foundation
import NATS

/// The benchmark's event mix over `owners` owners: likes, replies and
/// follows, with 5% duplicate likes and 3% unlikes of earlier likes. Each
/// like is of a post of its own, unless `postsPerOwner` is set: then post
/// likes go to one of that many posts per owner and follows to the owner,
/// so that with aggregation on most of them fold into groups.
/// Tracks which notifications are live, so it knows how many per-user
/// messages the worker must publish.
struct Workload {
    let owners: Int
    let postsPerOwner: Int
    private var random: SplitMix
    private var likes: [(owner: String, trigger: String, resource: String)] = []
    private var live = Set<String>()
    private var sequence = 0
    private(set) var expectedUserMessages = 0
    /// Notifications left live when the events are applied in stream order.
    var expectedLiveNotifications: Int { live.count }

    init(owners: Int, postsPerOwner: Int = 0, seed: UInt64) {
        self.owners = owners
        self.postsPerOwner = postsPerOwner
        self.random = SplitMix(seed: seed)
    }

    mutating func next() -> JetStreamAsyncPublisher.Message {
        sequence += 1
        let roll = random.next() % 100
        let kind: String
        var owner = "user-\(random.next() % UInt64(owners))"
        var trigger = "user-\(random.next() % 100_000)"
        var resource = "post-\(sequence)"
        if roll < 3, !likes.isEmpty {
            kind = "post.unlike"
            let like = likes[Int(random.next() % UInt64(likes.count))]
            (owner, trigger, resource) = like
        } else if roll < 8, !likes.isEmpty {
            kind = "post.like"
            let like = likes[Int(random.next() % UInt64(likes.count))]
            (owner, trigger, resource) = like
        } else {
            switch random.next() % 100 {
            case 0..<45: kind = "post.like"
            case 45..<55: kind = "comment.like"
            case 55..<70: kind = "reply.post"
            case 70..<80: kind = "reply.comment"
            default: kind = "user.follow"
            }
            if postsPerOwner > 0 {
                if kind == "post.like" { resource = "post-\(owner)-\(random.next() % UInt64(postsPerOwner))" }
                if kind == "user.follow" { resource = owner }
            }
            if kind == "post.like" { likes.append((owner, trigger, resource)) }
        }
        if owner == trigger { trigger += "x" }
        let key = "\(owner)|\(kind.replacingOccurrences(of: "unlike", with: "like"))|\(trigger)|\(resource)"
        if kind.hasSuffix("unlike") {
            if live.remove(key) != nil { expectedUserMessages += 1 }
        } else if live.insert(key).inserted {
            expectedUserMessages += 1
        }
        // Time moves on (a thousand events a second), so each event's actor
        // fields are newer than the profile the last one left.
        let body = Self.event(
            kind: kind, owner: owner, trigger: trigger, resource: resource, eventID: "bench-\(sequence)", createdAt: 1_765_318_000 + sequence / 1_000)
        return JetStreamAsyncPublisher.Message(subject: "notifications." + kind, payload: body)
    }

    static let actions: [String: (Int, String)] = [
        "post.like": (1, "POST"), "comment.like": (2, "COMMENT"), "reply.post": (3, "POST"),
        "reply.comment": (4, "COMMENT"), "user.follow": (5, "USER"), "post.unlike": (1, "POST"),
    ]

    /// A realistic event body (~330 bytes).
    static func event(kind: String, owner: String, trigger: String, resource: String, eventID: String, createdAt: Int = 1_765_318_000) -> [UInt8] {
        let (action, type) = actions[kind]!
        let text = """
            {"owner":"\(owner)","trigger_user":"\(trigger)","username":"Someone \(trigger)",\
            "user_picture":"https://cdn.example.com/u/\(trigger).jpg","user_bio":"Writes about Swift and servers",\
            "action":\(action),"resource_type":"\(type)","resource_id":"\(resource)",\
            "excerpt":"That is a great point about notification fan-out and back-pressure!",\
            "created_at":\(createdAt),"event_id":"\(eventID)"}
            """
        return Array(text.utf8)
    }
}

/// A small deterministic generator, so runs are comparable.
struct SplitMix {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
