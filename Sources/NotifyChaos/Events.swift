import Foundation
import NATS
import Synchronization

/// An event the suite publishes, with what the oracle needs to know of it.
struct ChaosEvent: Sendable {
    enum Effect: Sendable { case create, retract }

    let subject: String
    let body: [UInt8]
    let owner: String
    /// `action#resource_type#resource_id#trigger_user` (CONTRACT §2).
    let actionKey: String
    let eventID: String?
    let effect: Effect

    /// The event kinds of CONTRACT §1: subject suffix, action, resource type, effect.
    static let kinds: [(subject: String, action: Int, type: String, effect: Effect)] = [
        ("post.like", 1, "POST", .create), ("comment.like", 2, "COMMENT", .create), ("reply.post", 3, "POST", .create),
        ("reply.comment", 4, "COMMENT", .create), ("user.follow", 5, "USER", .create),
        ("post.unlike", 1, "POST", .retract), ("comment.unlike", 2, "COMMENT", .retract), ("user.unfollow", 5, "USER", .retract),
    ]

    /// A well-formed event of `kind` (a subject suffix from ``kinds``).
    init(kind: String, owner: String, trigger: String, resource: String, eventID: String?) {
        let entry = Self.kinds.first { $0.subject == kind }!
        var fields: [String: Any] = [
            "owner": owner, "trigger_user": trigger, "username": "User \(trigger)", "action": entry.action,
            "resource_type": entry.type, "resource_id": resource, "excerpt": "chaos suite event",
            "created_at": Int(Date().timeIntervalSince1970) - 60,
        ]
        if let eventID { fields["event_id"] = eventID }
        self.subject = "notifications." + kind
        self.body = Array((try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data())
        self.owner = owner
        self.actionKey = "\(entry.action)#\(entry.type)#\(resource)#\(trigger)"
        self.eventID = eventID
        self.effect = entry.effect
    }
}

/// A stream of events over `owners` owners (`<prefix><n>`): mostly new
/// notifications of every kind, with `duplicatePercent` duplicates (half
/// the same action key again under a new `event_id`, half an earlier
/// message published again as it was) and `retractPercent` retractions of
/// earlier likes and follows.
struct EventMix {
    let owners: Int
    let prefix: String
    let duplicatePercent: Int
    let retractPercent: Int
    private var creates: [ChaosEvent] = []
    private var retractable: [(kind: String, owner: String, trigger: String, resource: String)] = []
    private var sequence = 0

    init(owners: Int, prefix: String = "u", duplicatePercent: Int = 10, retractPercent: Int = 3) {
        self.owners = owners
        self.prefix = prefix
        self.duplicatePercent = duplicatePercent
        self.retractPercent = retractPercent
    }

    mutating func next() -> ChaosEvent {
        sequence += 1
        let roll = Int.random(in: 0..<100)
        if roll < duplicatePercent / 2, let earlier = creates.randomElement() {
            return earlier
        }
        if roll < duplicatePercent, let earlier = retractable.randomElement() {
            return ChaosEvent(kind: earlier.kind, owner: earlier.owner, trigger: earlier.trigger, resource: earlier.resource, eventID: "again-\(sequence)")
        }
        if roll < duplicatePercent + retractPercent, let earlier = retractable.randomElement() {
            let retraction = earlier.kind.replacingOccurrences(of: "like", with: "unlike").replacingOccurrences(of: "follow", with: "unfollow")
            return ChaosEvent(kind: retraction, owner: earlier.owner, trigger: earlier.trigger, resource: earlier.resource, eventID: "retract-\(sequence)")
        }
        let kind = ChaosEvent.kinds[Int.random(in: 0..<5)].subject
        let owner = prefix + String(Int.random(in: 0..<owners))
        let trigger = "t\(Int.random(in: 0..<500))"
        let resource = "r\(sequence)"
        // A quarter carry no event_id: redelivery is then recognised by stream sequence.
        let event = ChaosEvent(kind: kind, owner: owner, trigger: trigger, resource: resource, eventID: Int.random(in: 0..<4) == 0 ? nil : "e\(sequence)")
        creates.append(event)
        if ["post.like", "comment.like", "user.follow"].contains(kind) {
            retractable.append((kind, owner, trigger, resource))
        }
        return event
    }
}

/// What must be stored, from the events JetStream acknowledged, applied in
/// stream order with the rules of CONTRACT §2.
struct Oracle {
    /// Owner → action keys of live notifications.
    private(set) var live: [String: Set<String>] = [:]
    private var appliedEventIDs = Set<String>()

    mutating func apply(_ event: ChaosEvent) {
        if let id = event.eventID, !appliedEventIDs.insert(event.owner + "\u{0}" + id).inserted { return }
        switch event.effect {
        case .create: live[event.owner, default: []].insert(event.actionKey)
        case .retract: live[event.owner]?.remove(event.actionKey)
        }
    }

    /// What the acked events leave live, and which action keys they leave
    /// open to the order of consumption.
    struct Expected {
        /// Owner → action keys that must be stored.
        var required: [String: Set<String>]
        /// Owner → action keys whose outcome the consumption order decides:
        /// the same event (same `event_id`) published twice with another
        /// event on its key between the copies. The copy consumed first
        /// takes effect at its own place (docs/ARCHITECTURE.md, "Stream
        /// order"); these are neither required nor forbidden.
        var ambiguous: [String: Set<String>] = [:]
    }

    static func expected(_ events: [ChaosEvent], acknowledged: [(sequence: UInt64, index: Int)]) -> Expected {
        var oracle = Oracle()
        let ordered = acknowledged.sorted(by: { $0.sequence < $1.sequence }).map { events[$0.index] }
        for event in ordered { oracle.apply(event) }
        // Per action key, the positions of each event_id published more than once.
        var copies: [String: [String: [Int]]] = [:]
        for (position, event) in ordered.enumerated() {
            if let id = event.eventID { copies[event.owner + "\u{0}" + event.actionKey, default: [:]][id, default: []].append(position) }
        }
        var ambiguous: [String: Set<String>] = [:]
        for byID in copies.values {
            let repeated = byID.values.filter { $0.count > 1 }
            guard !repeated.isEmpty else { continue }
            let sample = ordered[repeated[0][0]]
            let onKey = ordered.indices.filter { ordered[$0].owner == sample.owner && ordered[$0].actionKey == sample.actionKey }
            // Every choice of which copy of each repeated event_id is consumed
            // first (and so takes effect at its own place); the others are no-ops.
            var choices: [Set<Int>] = [[]]
            for positions in repeated.prefix(4) {
                choices = choices.flatMap { chosen in positions.map { position in chosen.union(positions.filter { $0 != position }) } }
            }
            let outcomes = Set(choices.map { skipped -> Bool in
                var live = false
                for position in onKey where !skipped.contains(position) {
                    live = ordered[position].effect == .create
                }
                return live
            })
            if outcomes.count > 1 { ambiguous[sample.owner, default: []].insert(sample.actionKey) }
        }
        var required = oracle.live.filter { !$0.value.isEmpty }
        for (owner, keys) in ambiguous { required[owner]?.subtract(keys) }
        return Expected(required: required.filter { !$0.value.isEmpty }, ambiguous: ambiguous)
    }
}

/// Which publishes JetStream acknowledged (with their stream sequence) and
/// which failed; a failed one may still have been stored (its ack was lost).
final class PublishLog: Sendable {
    private struct State {
        var acknowledged: [(sequence: UInt64, index: Int)] = []
        var failed: [Int] = []
        var lastError: String?
    }

    private let state = Mutex(State())

    func acknowledged(_ index: Int, sequence: UInt64) {
        state.withLock { $0.acknowledged.append((sequence, index)) }
    }

    func failed(_ index: Int, _ error: String) {
        state.withLock { $0.failed.append(index); $0.lastError = error }
    }

    var acknowledged: [(sequence: UInt64, index: Int)] { state.withLock { $0.acknowledged } }
    var failed: [Int] { state.withLock { $0.failed } }
    var lastError: String? { state.withLock { $0.lastError } }
}

/// Publishes each event with a JetStream ack, `burst` at a time every
/// `interval`, and records the outcome of each in `log`.
func publishInBursts(_ events: [ChaosEvent], jetStream: JetStream, log: PublishLog, burst: Int, interval: Duration, from start: Int = 0) async {
    let clock = ContinuousClock()
    var deadline = clock.now
    for chunk in stride(from: start, to: events.count, by: burst) {
        for index in chunk..<min(chunk + burst, events.count) {
            await publish(events[index], index: index, jetStream: jetStream, log: log)
        }
        deadline += interval
        try? await clock.sleep(until: deadline)
    }
}

/// `count` events from 50 owners, published in the background 30 every
/// 200 ms: the steady load a store fault is injected under.
struct BackgroundLoad {
    let events: [ChaosEvent]
    let log = PublishLog()
    let publisher: Task<Void, Never>

    init(count: Int, jetStream: JetStream) {
        var mix = EventMix(owners: 50)
        let events = (0..<count).map { _ in mix.next() }
        let log = log
        self.events = events
        publisher = Task { await publishInBursts(events, jetStream: jetStream, log: log, burst: 30, interval: .milliseconds(200)) }
    }
}

/// Publishes one event with a JetStream ack and records the outcome.
func publish(_ event: ChaosEvent, index: Int, jetStream: JetStream, log: PublishLog) async {
    do {
        let ack = try await jetStream.publish(event.subject, payload: event.body)
        log.acknowledged(index, sequence: ack.sequence)
    } catch {
        log.failed(index, error.description)
    }
}

/// Writes `events.tsv` in the scenario's directory: one line per publish
/// (stream sequence or `failed`, subject, owner, action key, event id), in
/// stream order, to explain a failed check.
func writeEventLog(_ events: [ChaosEvent], _ log: PublishLog, to directory: String) {
    var lines = ["sequence\tindex\tsubject\towner\taction_key\tevent_id"]
    for (sequence, index) in log.acknowledged.sorted(by: { $0.sequence < $1.sequence }) {
        let event = events[index]
        lines.append("\(sequence)\t\(index)\t\(event.subject)\t\(event.owner)\t\(event.actionKey)\t\(event.eventID ?? "-")")
    }
    for index in log.failed {
        let event = events[index]
        lines.append("failed\t\(index)\t\(event.subject)\t\(event.owner)\t\(event.actionKey)\t\(event.eventID ?? "-")")
    }
    try? (lines.joined(separator: "\n") + "\n").write(toFile: directory + "/events.tsv", atomically: false, encoding: .utf8)
}
