public import KeyValueStore
import Synchronization

/// An event to apply, with the key that makes applying it idempotent.
public struct IncomingEvent: Sendable {
    public let event: NotificationEvent
    /// `e:<event_id>` when the event has one; otherwise the identity of its
    /// delivery (stream incarnation and sequence), so a redelivered message
    /// is recognised. `nil` (core NATS) disables the check.
    public let idempotencyKey: String?
    /// Where the event stands in the stream; `nil` (core NATS) applies
    /// events in the order they arrive.
    public let order: EventOrder?
    /// Set when the owner (or this trigger user for the owner) is over its
    /// rate: a creating event then folds into one notification per kind
    /// (and per trigger user) instead of making its own.
    public var throttled: Throttled?

    public init(event: NotificationEvent, idempotencyKey: String?, order: EventOrder? = nil, throttled: Throttled? = nil) {
        self.event = event
        self.idempotencyKey = idempotencyKey
        self.order = order
        self.throttled = throttled
    }

    /// The key for an event delivered from a JetStream stream.
    public static func key(for event: NotificationEvent, streamCreated: Int64, sequence: UInt64) -> String {
        if let id = event.eventID { return "e:" + id }
        return "s:\(streamCreated):\(sequence)"
    }
}

/// An event's place in the stream: what decides which of two events on
/// one action key is the later, whatever order they are delivered in (a
/// redelivery after a crash comes after events published later).
public struct EventOrder: Sendable, Hashable, Comparable {
    /// When the stream was created (a re-created stream starts over).
    public let stream: Int64
    public let sequence: UInt64

    public init(stream: Int64, sequence: UInt64) {
        self.stream = stream
        self.sequence = sequence
    }

    public static func < (lhs: EventOrder, rhs: EventOrder) -> Bool {
        (lhs.stream, lhs.sequence) < (rhs.stream, rhs.sequence)
    }

    var attributes: [String: AttributeValue] {
        ["stream": .integer(stream), "seq": .integer(Int64(bitPattern: sequence))]
    }

    init?(attributes: [String: AttributeValue]) {
        guard let stream = attributes["stream"]?.integerValue, let sequence = attributes["seq"]?.integerValue else { return nil }
        self.init(stream: stream, sequence: UInt64(bitPattern: sequence))
    }
}

/// What applying one event did.
public enum EventOutcome: Sendable, Hashable {
    /// A notification was created.
    case created(id: String)
    /// A live notification with the same action key exists; nothing new.
    case duplicate
    /// The live notification with this action key was deleted.
    case retracted(id: String)
    /// A retraction found nothing to delete.
    case nothingToRetract
    /// The actor joined a group: its notification `replaces` moved to the
    /// top as `id`.
    case aggregated(id: String, replaces: String)
    /// The actor left a group that has other actors: notification `id`
    /// was updated.
    case actorRemoved(id: String)
    /// The owner muted the event's kind or resource: nothing is stored.
    case muted
    /// Kept apart until `deliver_at` (Unix seconds); `id` is the schedule's.
    case scheduled(id: String, at: Int64)
    /// A retraction took back a notification not released yet.
    case unscheduled
    /// The same `event_id` (or delivery) was applied before.
    case alreadyProcessed
    /// An event later in the stream with the same action key was applied
    /// first (this one is a late redelivery); it has no effect.
    case superseded
    /// The owner is the trigger user: nobody is notified of their own action.
    case selfNotification
    /// The event is about a deleted resource (enrichment): nothing is stored.
    case resourceDeleted
}

/// Per-user messages committed together with a batch, to publish and then
/// delete. Left in the store by a crash, they are published at start-up.
public struct OutboxBatch: Sendable, Hashable {
    public let id: String
    public let messages: [OutboundMessage]
}

/// What the stored outbox keeps of each message: which notification was
/// created or deleted. Bodies are rebuilt from the notification items, so
/// the outbox costs a few bytes per message, not a copy of each record.
struct OutboxReference: Sendable, Hashable {
    enum Kind: UInt8 {
        case created = 0x63, deleted = 0x64, updated = 0x75  // "c", "d", "u"
        /// A profile (`owner` is the user) or a resource (`owner` its type, `id` its id) changed.
        case profile = 0x70, resource = 0x72  // "p", "r"
    }
    let kind: Kind
    let owner: String
    let id: String
    /// For `updated`: the id the notification had before (empty when it kept it).
    var replaces = ""

    static func encode(_ references: [OutboxReference]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(references.count * 48)
        for reference in references {
            bytes.append(reference.kind.rawValue)
            bytes.append(UInt8(reference.owner.utf8.count))  // user ids are at most 128 bytes
            bytes.append(contentsOf: reference.owner.utf8)
            if reference.kind == .resource {
                // Resource ids are up to 256 characters: two length bytes.
                let count = reference.id.utf8.count
                bytes.append(UInt8(count >> 8))
                bytes.append(UInt8(count & 0xFF))
            } else {
                bytes.append(UInt8(reference.id.utf8.count))
            }
            bytes.append(contentsOf: reference.id.utf8)
            if reference.kind == .updated {
                bytes.append(UInt8(reference.replaces.utf8.count))
                bytes.append(contentsOf: reference.replaces.utf8)
            }
        }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> [OutboxReference]? {
        var references: [OutboxReference] = []
        var index = 0
        func text(wide: Bool = false) -> String? {
            guard index + (wide ? 1 : 0) < bytes.count else { return nil }
            let count = wide ? Int(bytes[index]) << 8 | Int(bytes[index + 1]) : Int(bytes[index])
            index += wide ? 2 : 1
            guard index + count <= bytes.count else { return nil }
            defer { index += count }
            return String(decoding: bytes[index..<index + count], as: UTF8.self)
        }
        while index < bytes.count {
            guard let kind = Kind(rawValue: bytes[index]) else { return nil }
            index += 1
            guard let owner = text(), let id = text(wide: kind == .resource) else { return nil }
            var replaces = ""
            if kind == .updated {
                guard let text = text() else { return nil }
                replaces = text
            }
            references.append(OutboxReference(kind: kind, owner: owner, id: id, replaces: replaces))
        }
        return references
    }
}

/// The result of ``NotificationRepository/apply(_:)``.
public struct BatchResult: Sendable {
    /// One outcome per event, in order.
    public let outcomes: [EventOutcome]
    /// One outcome per profile or resource update, in order.
    public var updates: [UpdateOutcome] = []
    /// Resources the batch found deleted (by an update in it): their
    /// notifications are to be retracted (``NotificationRepository/retractions(on:at:)``).
    public var deletedResources: [(ResourceReference, at: Int64)] = []
    /// `nil` when the batch changed nothing anybody must hear about.
    public let outbox: OutboxBatch?
}

/// A client's receipt for one notification.
public struct Receipt: Sendable, Hashable {
    public enum Kind: String, Sendable {
        /// The client received the notification.
        case delivered
        /// The client showed it to the user.
        case seen
    }

    public let owner: String
    public let id: String
    public let kind: Kind

    public init(owner: String, id: String, kind: Kind) {
        self.owner = owner
        self.id = id
        self.kind = kind
    }
}

/// A page of a notification's actors, newest first.
public struct ActorPage: Sendable {
    public let items: [GroupActor]
    /// The cursor for the next page; `nil` when no older actor exists.
    public let next: String?
    /// How many actors the notification has.
    public let count: Int64
}

/// A page of a user's feed, newest first.
public struct FeedPage: Sendable {
    public let items: [NotificationRecord]
    /// The id to pass as `before` for the next page; `nil` when no older
    /// notification exists.
    public let next: String?
}

/// Notifications stored the way one would on DynamoDB: a single table, one
/// partition per owner.
///
/// | partition     | sort key        | item                                        |
/// |---------------|-----------------|---------------------------------------------|
/// | `U#<owner>`   | `N#<id>`        | the notification (ids sort by creation)     |
/// | `U#<owner>`   | `A#<actionKey>` | `{id}`: the live notification of the key    |
/// | `U#<owner>`   | `I#<key>`       | idempotency marker, expires after retention |
/// | `U#<owner>`   | `C`             | `{unread}`: the unread counter              |
/// | `U#<owner>`   | `P`             | the owner's ``Preferences``                 |
/// | `U#<owner>`   | `G#<resource>`  | `{group, opened}`: the group open for new actors on a resource, expires with its window |
/// | `U#<owner>`   | `T#<kind>#<trigger or *>` | as `G#`: the overflow group throttled events of a kind fold into |
/// | `U#<owner>`   | `H#<group>`     | `{id}`: the group's notification, once an actor joined (the id changes) |
/// | `U#<owner>`   | `M#<group>#<joined>` | an actor of the group beyond the ones its notification shows |
/// | `OUTBOX`      | `<batch id>`    | per-user messages of a committed batch      |
/// | `SCHEDULE`    | `<deliver_at>#<owner>#<id>` | a notification waiting for its `deliver_at`; its pointer is `{scheduled: <sort key>}` |
///
/// A batch of events becomes one transaction: the notifications, their
/// action-key and idempotency items, the counters and the outbox are
/// written together, each under a condition on what was read, so the
/// counter never drifts and concurrent workers cannot both create.
///
/// With aggregation, a like or follow points (`A#`) to its group and the
/// time it joined (`{group, joined}`) instead of a notification.
///
/// Notifications and their action-key items expire together after
/// ``retention`` through the store's time to live; ``removeExpired(limit:)``
/// deletes them and corrects the unread counters in one transaction.
public struct NotificationRepository: Sendable {
    public let store: any KeyValueStore
    public let ids: NotificationIDGenerator
    /// The per-user and per-room subjects (`USER_SUBJECT_PREFIX`,
    /// `ROOM_SUBJECT_PREFIX`).
    public let subjects: OutboundSubjects
    /// How long a repeated `event_id` (or delivery) has no effect.
    public let idempotencyRetention: Duration
    /// How long a notification is kept (`NOTIF_TTL_DAYS`); `nil` keeps it
    /// until it is retracted.
    public let retention: Duration?
    /// How long a notification is kept once read (`READ_TTL_DAYS`), when
    /// shorter than what is left of ``retention``; `nil`: no change on read.
    public let readRetention: Duration?
    /// How long a group stays open for likes and follows on the same
    /// resource to fold into it (`AGGREGATE_WINDOW`); `nil` turns
    /// aggregation off.
    public let aggregateWindow: Duration?
    /// Renders each notification's `title` and `body` as it is written;
    /// `nil` leaves them out.
    public let texts: (any NotificationTexts)?
    /// Whether actor profiles and resource previews are kept and shown
    /// current (`ENRICHMENT`).
    public let enrichment: Bool
    /// How picture paths become URLs on output (`CDN_BASE_URL`).
    public let pictures: PictureURLs
    /// Profiles and resources read lately (shared by the copies of this
    /// repository); off until a gateway follows their changes.
    public let cache: EnrichmentCache
    private let clock: @Sendable () -> Int64
    /// The repository's clock now, in Unix milliseconds.
    public var currentMilliseconds: Int64 { clock() }
    /// Why the last batch failed when the store was at fault; `nil` once
    /// a batch commits. Shared by the copies of this repository.
    private let lastBatchFault = SharedFault()

    /// How often a batch is re-planned when a concurrent writer changed
    /// what it read.
    static let maxPlanAttempts = 8
    static let outboxPartition = "OUTBOX"
    /// The store's time-to-live attribute (``TimeToLive``'s default).
    static let expiryAttribute = TimeToLive().attributeName

    /// - Parameter clockMilliseconds: the current Unix time in milliseconds.
    public init(
        store: any KeyValueStore,
        subjects: OutboundSubjects = OutboundSubjects(),
        idempotencyRetention: Duration = .seconds(8 * 86_400),
        retention: Duration? = .seconds(90 * 86_400),
        readRetention: Duration? = nil,
        aggregateWindow: Duration? = nil,
        texts: (any NotificationTexts)? = nil,
        enrichment: Bool = false,
        pictures: PictureURLs = PictureURLs(),
        cache: EnrichmentCache = EnrichmentCache(),
        ids: NotificationIDGenerator = NotificationIDGenerator(),
        clockMilliseconds: @escaping @Sendable () -> Int64 = RepositoryClock.milliseconds
    ) {
        self.store = store
        self.subjects = subjects
        self.idempotencyRetention = idempotencyRetention
        self.retention = retention
        self.readRetention = readRetention
        self.aggregateWindow = aggregateWindow.flatMap { $0 > .zero ? $0 : nil }
        self.texts = texts
        self.enrichment = enrichment
        self.pictures = pictures
        self.cache = cache
        self.ids = ids
        self.clock = clockMilliseconds
    }

    static func partition(_ owner: String) -> String { "U#" + owner }
    static func notificationKey(_ owner: String, _ id: String) -> ItemKey { ItemKey(partition: partition(owner), sort: "N#" + id) }
    static func actionKey(_ owner: String, _ key: String) -> ItemKey { ItemKey(partition: partition(owner), sort: "A#" + key) }
    static func idempotencyKey(_ owner: String, _ key: String) -> ItemKey { ItemKey(partition: partition(owner), sort: "I#" + key) }
    static func counterKey(_ owner: String) -> ItemKey { counterKey(partition: partition(owner)) }
    /// The group open for new actors on an event's resource.
    static func openGroupKey(_ event: NotificationEvent) -> ItemKey {
        openGroupKey(owner: event.owner, action: event.action, resourceType: event.resourceType, resourceID: event.resourceID)
    }
    static func openGroupKey(owner: String, action: Int64, resourceType: String, resourceID: String) -> ItemKey {
        ItemKey(partition: partition(owner), sort: "G#\(action)#\(resourceType)#\(resourceID)")
    }
    static func preferencesKey(_ owner: String) -> ItemKey { ItemKey(partition: partition(owner), sort: "P") }
    static let schedulePartition = "SCHEDULE"
    /// `<deliver_at, 11 digits>#<owner>#<id>`: due entries sort first.
    static func scheduleKey(at deliverAt: Int64, owner: String, id: String) -> ItemKey {
        ItemKey(partition: schedulePartition, sort: scheduleTime(deliverAt) + "#" + owner + "#" + id)
    }
    static func scheduleTime(_ seconds: Int64) -> String {
        let digits = String(max(seconds, 0))
        return String(repeating: "0", count: max(0, 11 - digits.count)) + digits
    }
    /// The group throttled events of one kind fold into (`T#<kind>#*`, or
    /// `T#<kind>#<trigger>` for one trigger user over its rate).
    static func overflowGroupKey(owner: String, kind: EventKind, trigger: String?) -> ItemKey {
        ItemKey(partition: partition(owner), sort: "T#" + kind.name + "#" + (trigger ?? "*"))
    }
    static func groupHeadKey(_ owner: String, _ group: String) -> ItemKey { ItemKey(partition: partition(owner), sort: "H#" + group) }
    static func memberKey(_ owner: String, group: String, joined: String) -> ItemKey {
        ItemKey(partition: partition(owner), sort: "M#" + group + "#" + joined)
    }
    static func counterKey(partition: String) -> ItemKey { ItemKey(partition: partition, sort: "C") }

    // MARK: Applying events

    /// How many events one ``apply(_:publishedOutboxes:)`` takes: all of
    /// them on a store without a transaction limit; on DynamoDB (100
    /// actions) what fits when each event writes three items and a counter,
    /// with the outbox and ``maxPublishedOutboxes`` deletions on top;
    /// with aggregation, seven (a fold replaces the notification and writes
    /// its group's head and a stored member); with enrichment, three more
    /// (the actor's profile, the resource's owner entry and a check of the
    /// resource). Profile and resource updates count as events.
    public var eventsPerTransaction: Int {
        max(1, (store.transactionActionLimit - 1 - Self.maxPublishedOutboxes) / ((aggregateWindow == nil ? 4 : 7) + (enrichment ? 3 : 0)))
    }

    /// The most published outboxes one transaction deletes.
    public static let maxPublishedOutboxes = 4

    /// Applies `events` in order in one transaction and returns what each
    /// did and the outbox to publish. Profile and resource `updates` go in
    /// the same transaction, ahead of the events: the newest version of
    /// each wins whatever the order, and the batch's events show it.
    ///
    /// - Parameter publishedOutboxes: ids of outboxes already published
    ///   (at most ``maxPublishedOutboxes``), deleted in the same transaction
    ///   (saves a commit per batch).
    /// - Throws: a validation error for more than ``eventsPerTransaction``
    ///   events and updates: callers split larger batches.
    public func apply(
        _ events: [IncomingEvent], updates: [EnrichmentUpdate] = [], publishedOutboxes: [String] = []
    ) async throws(KeyValueStoreError) -> BatchResult {
        guard events.count + updates.count <= eventsPerTransaction, publishedOutboxes.count <= Self.maxPublishedOutboxes else {
            throw KeyValueStoreError(
                code: .validation,
                message: "a batch of \(events.count + updates.count) events and \(publishedOutboxes.count) published outboxes does not fit one transaction of this store (at most \(eventsPerTransaction) events and \(Self.maxPublishedOutboxes) outboxes)")
        }
        var attempt = 1
        while true {
            do {
                let result = try await applyOnce(events, updates: updates, publishedOutboxes: publishedOutboxes)
                lastBatchFault.withLock { $0 = nil }
                return result
            } catch where error.isConditionFailure && attempt < Self.maxPlanAttempts {
                // Another writer changed an item we read: read again, re-plan.
                attempt += 1
            } catch {
                if error.isStoreFault { lastBatchFault.withLock { $0 = error } }
                throw error
            }
        }
    }

    private func applyOnce(
        _ events: [IncomingEvent], updates: [EnrichmentUpdate], publishedOutboxes: [String]
    ) async throws(KeyValueStoreError) -> BatchResult {
        let now = clock()
        // What decisions depend on: markers, action-key pointers and open
        // groups (then, read by the plan, the notifications and groups
        // they lead to).
        var keys = Set<ItemKey>(minimumCapacity: events.count * (enrichment ? 6 : 3) + updates.count)
        for incoming in events where !incoming.event.isSelfNotification {
            let owner = incoming.event.owner
            keys.insert(Self.actionKey(owner, incoming.event.actionKey))
            if let key = incoming.idempotencyKey { keys.insert(Self.idempotencyKey(owner, key)) }
            if incoming.event.kind.effect == .create { keys.insert(Self.preferencesKey(owner)) }
            // A group's last actor leaving closes the group open on its resource.
            if let key = groupKey(incoming) {
                keys.insert(key)
            } else if incoming.event.kind.effect == .retract && incoming.event.kind.isGroupable {
                keys.insert(Self.openGroupKey(incoming.event))
            }
        }
        addEnrichmentKeys(events, updates, to: &keys)
        var members: [ItemKey: [Item]] = [:]
        while true {
            let outcome = try await store.readAndWrite(prefetching: Array(keys)) { [self, keys, members] reader throws(KeyValueStoreError) in
                try plan(events, updates: updates, reading: keys, with: reader, now: now, publishedOutboxes: publishedOutboxes, members: members)
            }
            switch outcome {
            case .done(let result):
                return result
            case .needsMembers(let groups):
                // An unlike took away a shown actor of a group with more:
                // the next newest comes from the group's stored members.
                let retractions = events.count { $0.event.kind.effect == .retract }
                for head in groups {
                    members[head] = try await store.query(Query(
                        partition: head.partition, sortKey: .beginsWith("M#" + head.sort.dropFirst(2) + "#"),
                        limit: retractions + 1, scanForward: false)).items
                }
            }
        }
    }

    /// What a plan came to: a batch, or the members of groups it must read
    /// first (their head keys), by a query it cannot run inside the plan.
    private enum PlanOutcome: Sendable {
        case done(BatchResult)
        case needsMembers(Set<ItemKey>)
    }

    /// Whether `event` folds into a group (aggregation is on and its kind aggregates).
    private func aggregates(_ event: NotificationEvent) -> Bool {
        aggregateWindow != nil && event.kind.aggregates
    }

    /// The group a creating event may fold into: for a throttled one, the
    /// owner's overflow group of its kind (and trigger user, when that user
    /// is over its rate); for a like or follow, its resource's; else `nil`.
    private func groupKey(_ incoming: IncomingEvent) -> ItemKey? {
        let event = incoming.event
        guard event.kind.effect == .create, event.deliverAt == nil else { return nil }
        switch incoming.throttled {
        case .owner?: return Self.overflowGroupKey(owner: event.owner, kind: event.kind, trigger: nil)
        case .triggerUser?: return Self.overflowGroupKey(owner: event.owner, kind: event.kind, trigger: event.triggerUser)
        case nil: return aggregates(event) ? Self.openGroupKey(event) : nil
        }
    }

    /// How long an overflow group stays open when aggregation is off.
    static let overflowWindow = Duration.seconds(3_600)

    /// Decides what `events` do, given what `reader` finds, and the
    /// transaction that does it: one action per changed item, each
    /// conditional on what was read, the counters and the outbox.
    ///
    /// - Parameter members: the newest stored members of groups, by head
    ///   key, for groups an unlike must take a shown actor from.
    private func plan(
        _ events: [IncomingEvent], updates: [EnrichmentUpdate], reading keys: Set<ItemKey>, with reader: ItemReader, now: Int64,
        publishedOutboxes: [String], members: [ItemKey: [Item]]
    ) throws(KeyValueStoreError) -> PlannedWrite<PlanOutcome> {
        var plan = BatchPlan()
        for items in members.values {
            plan.record(read: Set(items.map(\.key)), found: Dictionary(items.map { ($0.key, $0) }) { first, _ in first })
        }
        plan.record(read: keys, found: try reader.items(keys))
        // Then what pointers lead to: notifications that retractions delete,
        // and the heads of groups; then the groups' notifications and the
        // stored entries of actors leaving them.
        var next = Set<ItemKey>()
        for incoming in events where !incoming.event.isSelfNotification {
            let (event, pointer) = (incoming.event, plan.current(Self.actionKey(incoming.event.owner, incoming.event.actionKey)))
            if event.kind.effect == .retract, let id = pointer?["id"]?.stringValue {
                next.insert(Self.notificationKey(event.owner, id))
            }
            if let group = pointer?["group"]?.stringValue { next.insert(Self.groupHeadKey(event.owner, group)) }
            if let key = groupKey(incoming), let group = plan.current(key)?["group"]?.stringValue {
                next.insert(Self.groupHeadKey(event.owner, group))
            }
            if event.kind.effect == .retract, let scheduled = pointer?["scheduled"]?.stringValue {
                next.insert(ItemKey(partition: Self.schedulePartition, sort: scheduled))
            }
        }
        next.subtract(plan.readKeys)
        if !next.isEmpty { plan.record(read: next, found: try reader.items(next)) }
        next = []
        for incoming in events where !incoming.event.isSelfNotification {
            let (event, pointer) = (incoming.event, plan.current(Self.actionKey(incoming.event.owner, incoming.event.actionKey)))
            if let group = pointer?["group"]?.stringValue {
                next.insert(Self.notificationKey(event.owner, currentID(of: group, owner: event.owner, in: plan)))
                if event.kind.effect == .retract {
                    next.insert(Self.memberKey(event.owner, group: group, joined: pointer?["joined"]?.stringValue ?? group))
                }
            }
            if let key = groupKey(incoming), let group = plan.current(key)?["group"]?.stringValue {
                next.insert(Self.notificationKey(event.owner, currentID(of: group, owner: event.owner, in: plan)))
            }
        }
        next.subtract(plan.readKeys)
        if !next.isEmpty { plan.record(read: next, found: try reader.items(next)) }

        var outcomes: [EventOutcome] = []
        outcomes.reserveCapacity(events.count)
        var messages: [OutboundMessage] = []
        var references: [OutboxReference] = []
        /// Groups whose stored members an unlike needs (head keys).
        var membersNeeded = Set<ItemKey>()
        /// Members stored by this batch, per group head, oldest first.
        var stored: [ItemKey: [ItemKey]] = [:]
        let markerExpiry: [String: AttributeValue] = [
            Self.expiryAttribute: .integer(now / 1000 + idempotencyRetention.components.seconds),
        ]
        let notificationExpiry = retention.map { AttributeValue.integer(now / 1000 + $0.components.seconds) }
        // An actor's pointer and member entry outlive the group's
        // notification: a later fold renews it for up to a window.
        let actorExpiry = retention.map { AttributeValue.integer(now / 1000 + $0.components.seconds + (aggregateWindow?.components.seconds ?? 0)) }
        var preferences: [String: Preferences] = [:]
        /// The priority of each message's event.
        var priorities: [NotificationEvent.Priority] = []
        /// Profiles and resources changed, announced once each.
        var changed: [OutboxReference] = []
        var announcing = Set<OutboxReference>()
        var updateOutcomes: [UpdateOutcome] = []
        for update in updates {
            let (outcome, reference) = self.plan(update, in: &plan)
            updateOutcomes.append(outcome)
            if let reference, announcing.insert(reference).inserted { changed.append(reference) }
        }
        for incoming in events {
            if incoming.event.isSelfNotification {
                outcomes.append(.selfNotification)
                continue
            }
            let (event, actorChange) = planActor(of: incoming.event, in: &plan)
            if let actorChange, announcing.insert(actorChange).inserted { changed.append(actorChange) }
            if event.kind.effect == .create, let stored = plan.current(Self.preferencesKey(event.owner)) {
                let owner = preferences[event.owner] ?? Preferences(attributes: stored.attributes)
                preferences[event.owner] = owner
                if owner.mutes(event) {
                    outcomes.append(.muted)
                    continue
                }
            }
            let marker = incoming.idempotencyKey.map { Self.idempotencyKey(event.owner, $0) }
            if let marker, plan.current(marker) != nil {
                outcomes.append(.alreadyProcessed)
                continue
            }
            let pointer = Self.actionKey(event.owner, event.actionKey)
            // The pointer keeps the stream position of the last event applied
            // to its action key (after a retraction, as a tombstone): an
            // earlier event delivered late changes nothing.
            let current = plan.current(pointer)
            if let order = incoming.order, let applied = current.flatMap({ EventOrder(attributes: $0.attributes) }), order < applied {
                outcomes.append(.superseded)
                if let marker { plan.set(marker, Item(key: marker, attributes: markerExpiry)) }
                continue
            }
            let liveID = current?["id"]?.stringValue
            let liveGroup = current?["group"]?.stringValue.flatMap { group in
                groupNotification(group, owner: event.owner, in: plan).map { (group, $0) }
            }
            switch event.kind.effect {
            case .create:
                if isAboutDeletedResource(event, in: &plan) {
                    outcomes.append(.resourceDeleted)
                } else if liveID != nil || liveGroup != nil || current?["scheduled"] != nil {
                    outcomes.append(.duplicate)
                    if let order = incoming.order, let current {
                        // Later than what the pointer holds: remember it.
                        plan.set(pointer, Item(key: pointer, attributes: current.attributes.merging(order.attributes) { _, new in new }))
                    }
                } else if let deliverAt = event.deliverAt, deliverAt * 1000 > now {
                    // Kept apart until deliver_at; the pointer holds the action key.
                    let id = ids.next(millisecond: UInt64(max(now, 0)))
                    let key = Self.scheduleKey(at: deliverAt, owner: event.owner, id: id)
                    let expiry = retention.map { AttributeValue.integer(deliverAt + $0.components.seconds) }
                    var attributes = NotificationRecord(event: event, id: id, receivedAt: now).attributes
                    if let expiry { attributes[Self.expiryAttribute] = expiry }
                    plan.set(key, Item(key: key, attributes: attributes), fresh: true)
                    var pointerAttributes: [String: AttributeValue] = ["scheduled": .string(key.sort)]
                    pointerAttributes.merge(incoming.order?.attributes ?? [:]) { _, new in new }
                    if let expiry { pointerAttributes[Self.expiryAttribute] = expiry }
                    plan.set(pointer, Item(key: pointer, attributes: pointerAttributes))
                    planResourceOwner(event, now: now, in: &plan)
                    outcomes.append(.scheduled(id: id, at: deliverAt))
                } else if let openKey = groupKey(incoming) {
                    let id = ids.next(millisecond: UInt64(max(now, 0)))
                    let actor = GroupActor(event: event, joined: id)
                    let overflow = incoming.throttled != nil
                    let window = (aggregateWindow ?? Self.overflowWindow).components.seconds * 1000
                    let group: String
                    if let open = plan.current(openKey), let openGroup = open["group"]?.stringValue,
                       let opened = open["opened"]?.integerValue, now - opened < window,
                       let (key, folded) = groupNotification(openGroup, owner: event.owner, in: plan), var members = folded.group {
                        // Fold: the group moves to the top under a new id, unread.
                        group = openGroup
                        var record = folded
                        members.actors.insert(actor, at: 0)
                        members.actorCount += 1
                        if members.actors.count > NotificationGroup.shown {
                            let older = members.actors.removeLast()
                            let memberKey = Self.memberKey(event.owner, group: group, joined: older.joined)
                            var attributes = older.attributes
                            if let actorExpiry { attributes[Self.expiryAttribute] = actorExpiry }
                            plan.set(memberKey, Item(key: memberKey, attributes: attributes))
                            stored[Self.groupHeadKey(event.owner, group), default: []].append(memberKey)
                        }
                        if record.read { plan.addUnread(event.owner, 1) }
                        plan.set(key, nil)
                        record.id = id
                        record.read = false
                        record.receivedAt = now
                        (record.deliveredAt, record.seenAt, record.readAt) = (nil, nil, nil)
                        if overflow { record.resourceID = event.resourceID }
                        record.show(actor)
                        if let excerpt = event.excerpt { record.excerpt = excerpt }
                        record.group = members
                        let head = Self.groupHeadKey(event.owner, group)
                        var headAttributes: [String: AttributeValue] = ["id": .string(id)]
                        if let notificationExpiry { headAttributes[Self.expiryAttribute] = notificationExpiry }
                        plan.set(head, Item(key: head, attributes: headAttributes))
                        record = put(record, expiry: notificationExpiry, in: &plan)
                        messages.append(.updated(pictures.absolute(record), replaces: folded.id, subjects: subjects))
                        references.append(OutboxReference(kind: .updated, owner: event.owner, id: id, replaces: folded.id))
                        outcomes.append(.aggregated(id: id, replaces: folded.id))
                    } else {
                        // A new group, open for a window.
                        group = id
                        var record = NotificationRecord(event: event, id: id, receivedAt: now)
                        record.group = NotificationGroup(id: group, actorCount: 1, actors: [actor], throttled: overflow)
                        plan.set(openKey, Item(key: openKey, attributes: [
                            "group": .string(group), "opened": .integer(now),
                            Self.expiryAttribute: .integer((now + window) / 1000 + 1),
                        ]))
                        record = put(record, expiry: notificationExpiry, in: &plan)
                        plan.addUnread(event.owner, 1)
                        messages.append(.created(pictures.absolute(record), subjects: subjects))
                        references.append(OutboxReference(kind: .created, owner: event.owner, id: id))
                        outcomes.append(.created(id: id))
                    }
                    // `joined` is the group's id for its first actor.
                    var pointerAttributes: [String: AttributeValue] = ["group": .string(group)]
                    if id != group { pointerAttributes["joined"] = .string(id) }
                    pointerAttributes.merge(incoming.order?.attributes ?? [:]) { _, new in new }
                    if let actorExpiry { pointerAttributes[Self.expiryAttribute] = actorExpiry }
                    plan.set(pointer, Item(key: pointer, attributes: pointerAttributes))
                    planResourceOwner(event, now: now, in: &plan)
                } else {
                    let id = ids.next(millisecond: UInt64(max(now, 0)))
                    var pointerAttributes: [String: AttributeValue] = ["id": .string(id)]
                    pointerAttributes.merge(incoming.order?.attributes ?? [:]) { _, new in new }
                    if let notificationExpiry { pointerAttributes[Self.expiryAttribute] = notificationExpiry }
                    let record = put(NotificationRecord(event: event, id: id, receivedAt: now), expiry: notificationExpiry, in: &plan)
                    plan.set(pointer, Item(key: pointer, attributes: pointerAttributes))
                    planResourceOwner(event, now: now, in: &plan)
                    plan.addUnread(event.owner, 1)
                    messages.append(.created(pictures.absolute(record), subjects: subjects))
                    references.append(OutboxReference(kind: .created, owner: event.owner, id: id))
                    outcomes.append(.created(id: id))
                }
            case .retract:
                // A tombstone with this event's position, so that the create
                // it retracts, delivered late, stays retracted.
                let tombstone = incoming.order.map { order in
                    Item(key: pointer, attributes: order.attributes.merging(markerExpiry) { _, new in new })
                }
                if let id = liveID {
                    let key = Self.notificationKey(event.owner, id)
                    if let notification = plan.current(key) {
                        if notification["read"]?.boolValue == false { plan.addUnread(event.owner, -1) }
                        plan.set(key, nil)
                    }
                    plan.set(pointer, tombstone)
                    messages.append(.deleted(id: id, owner: event.owner, subjects: subjects))
                    references.append(OutboxReference(kind: .deleted, owner: event.owner, id: id))
                    outcomes.append(.retracted(id: id))
                } else if let (group, (key, record)) = liveGroup,
                          let change = leave(
                              group, joined: current?["joined"]?.stringValue ?? group, record: record, key: key, members: members,
                              stored: stored, in: &plan) {
                    plan.set(pointer, tombstone)
                    switch change {
                    case .deleted:
                        messages.append(.deleted(id: record.id, owner: event.owner, subjects: subjects))
                        references.append(OutboxReference(kind: .deleted, owner: event.owner, id: record.id))
                        outcomes.append(.retracted(id: record.id))
                    case .updated(let updated):
                        messages.append(.updated(pictures.absolute(updated), replaces: nil, subjects: subjects))
                        references.append(OutboxReference(kind: .updated, owner: event.owner, id: record.id))
                        outcomes.append(.actorRemoved(id: record.id))
                    case .needsMembers(let head):
                        membersNeeded.insert(head)
                        outcomes.append(.actorRemoved(id: record.id))
                    }
                } else if let scheduled = current?["scheduled"]?.stringValue {
                    let key = ItemKey(partition: Self.schedulePartition, sort: scheduled)
                    if plan.current(key) != nil { plan.set(key, nil) }
                    plan.set(pointer, tombstone)
                    outcomes.append(.unscheduled)
                } else {
                    if let tombstone { plan.set(pointer, tombstone) }
                    outcomes.append(.nothingToRetract)
                }
            }
            if let marker {
                plan.set(marker, Item(key: marker, attributes: markerExpiry))
            }
            while priorities.count < messages.count { priorities.append(event.priority) }
        }
        if !membersNeeded.isEmpty {
            return PlannedWrite(actions: [], result: .needsMembers(membersNeeded))
        }

        var actions = plan.actions(counterKey: Self.counterKey(_:))
        for id in publishedOutboxes {
            actions.append(.delete(ItemKey(partition: Self.outboxPartition, sort: id)))
        }
        // An update of a notification the batch then deletes (its last
        // actors leaving, as when their resource is deleted) says nothing
        // the deletion does not.
        let gone = Set(references.filter { $0.kind == .deleted }.map(\.id))
        if !gone.isEmpty {
            let kept = references.indices.filter { references[$0].kind != .updated || !references[$0].replaces.isEmpty || !gone.contains(references[$0].id) }
            if kept.count < references.count {
                (messages, references, priorities) = (kept.map { messages[$0] }, kept.map { references[$0] }, kept.map { priorities[$0] })
            }
        }
        // Changes of what notifications show go first.
        let announced = changed.compactMap { announcement($0, in: plan) }
        let outbox = outbox(announced + messages, changed + references, Array(repeating: .normal, count: announced.count) + priorities, now: now, into: &actions)
        var result = BatchResult(outcomes: outcomes, outbox: outbox)
        result.updates = updateOutcomes
        for case .resource(let update) in updates {
            if let preview = preview(at: Self.resourceKey(update.resource), in: plan), preview.deleted,
               !result.deletedResources.contains(where: { $0.0 == update.resource }) {
                result.deletedResources.append((update.resource, at: preview.updatedAt))
            }
        }
        return PlannedWrite(actions: actions, result: .done(result))
    }

    /// The messages of high-priority events first, the others in order. A
    /// message about a notification that another message of the batch is
    /// also about keeps its place, so clients see each one's changes in order.
    static func highPriorityFirst(
        _ messages: [OutboundMessage], _ references: [OutboxReference], _ priorities: [NotificationEvent.Priority]
    ) -> ([OutboundMessage], [OutboxReference]) {
        guard priorities.count == messages.count, priorities.contains(.high) else { return (messages, references) }
        var mentions: [String: Int] = [:]
        for reference in references {
            mentions[reference.id, default: 0] += 1
            if !reference.replaces.isEmpty { mentions[reference.replaces, default: 0] += 1 }
        }
        func first(_ index: Int) -> Bool {
            priorities[index] == .high && mentions[references[index].id] == 1
                && (references[index].replaces.isEmpty || mentions[references[index].replaces] == 1)
        }
        let order = messages.indices.filter(first) + messages.indices.filter { !first($0) }
        return (order.map { messages[$0] }, order.map { references[$0] })
    }

    // MARK: Scheduled notifications

    /// Releases up to `limit` scheduled notifications whose `deliver_at`
    /// has come: each becomes a notification with a new id (so it is the
    /// newest in the feed, and resuming clients get it), unread, with its
    /// outbox, in one transaction. Returns how many it released and the
    /// outbox to publish. When another worker released some first, it
    /// returns what it could and leaves the rest to the next call.
    public func releaseDue(limit: Int = 100) async throws(KeyValueStoreError) -> (released: Int, outbox: OutboxBatch?) {
        let now = clock()
        let chunk = max(1, min(limit, (store.transactionActionLimit - 2) / 4))
        let due = try await store.query(Query(
            partition: Self.schedulePartition, sortKey: .lessThan(Self.scheduleTime(now / 1000 + 1)), limit: chunk))
        guard !due.items.isEmpty else { return (0, nil) }
        var records: [(Item, NotificationRecord)] = []
        for item in due.items {
            guard let record = NotificationRecord(attributes: item.attributes) else {
                throw KeyValueStoreError(code: .corrupt, message: "scheduled item \(item.key) cannot be read")
            }
            records.append((item, record))
        }
        let pointers = try await store.batchGetItems(
            records.map { Self.actionKey($0.1.owner, $0.1.actionKey) }, consistentRead: true)
        var actions: [WriteAction] = []
        var messages: [OutboundMessage] = []
        var references: [OutboxReference] = []
        var priorities: [NotificationEvent.Priority] = []
        var unread: [String: Int64] = [:]
        let expiry = retention.map { AttributeValue.integer(now / 1000 + $0.components.seconds) }
        for (item, scheduled) in records {
            actions.append(.delete(item.key, condition: .itemExists))
            let pointerKey = Self.actionKey(scheduled.owner, scheduled.actionKey)
            // Retracted meanwhile: the entry goes, nothing is released.
            guard pointers[pointerKey]?["scheduled"]?.stringValue == item.key.sort else { continue }
            var record = scheduled
            record.id = ids.next(millisecond: UInt64(max(now, 0)))
            record.receivedAt = now
            record = put(record, expiry: expiry, into: &actions)
            var set: [String: AttributeValue] = ["id": .string(record.id)]
            if let expiry { set[Self.expiryAttribute] = expiry }
            actions.append(.update(pointerKey, Update(set: set, remove: ["scheduled"]), condition: .equals("scheduled", .string(item.key.sort))))
            unread[record.owner, default: 0] += 1
            messages.append(.created(pictures.absolute(record), subjects: subjects))
            references.append(OutboxReference(kind: .created, owner: record.owner, id: record.id))
            priorities.append(record.priority)
        }
        for (owner, delta) in unread.sorted(by: { $0.key < $1.key }) {
            actions.append(.update(Self.counterKey(owner), Update(add: ["unread": delta])))
        }
        let outbox = outbox(messages, references, priorities, now: now, into: &actions)
        do {
            try await store.transactWriteItems(actions)
        } catch where error.isConditionFailure {
            return (0, nil)
        }
        return (messages.count, outbox)
    }

    /// How many notifications wait for their `deliver_at`, counting up to `limit`.
    public func scheduledCount(limit: Int = 10_000) async throws(KeyValueStoreError) -> Int {
        try await store.query(Query(partition: Self.schedulePartition, limit: limit)).items.count
    }

    /// Plans a new notification item; returns the record as written (rendered).
    private func put(_ record: NotificationRecord, expiry: AttributeValue?, into actions: inout [WriteAction]) -> NotificationRecord {
        let record = rendered(record)
        var attributes = record.attributes
        if let expiry { attributes[Self.expiryAttribute] = expiry }
        actions.append(.put(Item(key: Self.notificationKey(record.owner, record.id), attributes: attributes), condition: .itemNotExists))
        return record
    }

    /// The outbox of `messages` (high priority first), written by `actions`;
    /// `nil` when there are none.
    private func outbox(
        _ messages: [OutboundMessage], _ references: [OutboxReference], _ priorities: [NotificationEvent.Priority], now: Int64,
        into actions: inout [WriteAction]
    ) -> OutboxBatch? {
        guard !messages.isEmpty else { return nil }
        let (messages, references) = Self.highPriorityFirst(messages, references, priorities)
        let batch = OutboxBatch(id: ids.next(millisecond: UInt64(max(now, 0))), messages: messages + dispatches(references))
        actions.append(.put(Self.outboxItem(id: batch.id, references), condition: .itemNotExists))
        return batch
    }

    /// One dispatch message per user notification `references` create,
    /// when external delivery is on (rooms have no addresses). A
    /// republished outbox announces them again: the dispatcher skips a
    /// channel already sent.
    private func dispatches(_ references: [OutboxReference]) -> [OutboundMessage] {
        guard let subject = subjects.dispatch else { return [] }
        return references.compactMap { reference in
            guard reference.kind == .created, Room(owner: reference.owner) == nil else { return nil }
            return .dispatch(owner: reference.owner, id: reference.id, subject: subject)
        }
    }

    /// Plans a new notification item; returns the record as written (rendered).
    private func put(_ record: NotificationRecord, expiry: AttributeValue?, in plan: inout BatchPlan) -> NotificationRecord {
        let record = rendered(record)
        let key = Self.notificationKey(record.owner, record.id)
        var attributes = record.attributes
        if let expiry { attributes[Self.expiryAttribute] = expiry }
        plan.set(key, Item(key: key, attributes: attributes), fresh: true)
        return record
    }

    /// `record` with its title and body rendered for what it says now
    /// (a group's count changes them).
    func rendered(_ record: NotificationRecord) -> NotificationRecord {
        guard let texts, let text = texts.inApp(record) else { return record }
        var record = record
        record.title = text.title
        record.body = text.body
        return record
    }

    // MARK: Groups

    /// The id of a group's notification now: the group's own id until an
    /// actor joins, then what its head item says.
    private func currentID(of group: String, owner: String, in plan: BatchPlan) -> String {
        plan.current(Self.groupHeadKey(owner, group))?["id"]?.stringValue ?? group
    }

    /// A group's live notification and its key; `nil` once it is gone
    /// (every actor left, or it expired).
    private func groupNotification(_ group: String, owner: String, in plan: BatchPlan) -> (ItemKey, NotificationRecord)? {
        let key = Self.notificationKey(owner, currentID(of: group, owner: owner, in: plan))
        guard let item = plan.current(key), let record = NotificationRecord(attributes: item.attributes), record.group?.id == group
        else { return nil }
        return (key, record)
    }

    /// What an actor leaving a group did to its notification.
    private enum GroupChange {
        /// The last actor left: the notification is deleted.
        case deleted
        /// The notification, with the actor gone (same id, same place).
        case updated(NotificationRecord)
        /// The next newest actor must be read from the group's members first.
        case needsMembers(ItemKey)
    }

    /// Plans the actor who joined `group` at `joined` leaving it; `nil`
    /// when the actor is not in it.
    ///
    /// - Parameters:
    ///   - members: the newest stored members of groups (by head key) read
    ///     for this batch.
    ///   - stored: members this batch stores, by head key, oldest first.
    private func leave(
        _ group: String, joined: String, record: NotificationRecord, key: ItemKey, members: [ItemKey: [Item]],
        stored: [ItemKey: [ItemKey]], in plan: inout BatchPlan
    ) -> GroupChange? {
        guard var state = record.group else { return nil }
        let (owner, head) = (record.owner, Self.groupHeadKey(record.owner, group))
        if let index = state.actors.firstIndex(where: { $0.joined == joined }) {
            state.actors.remove(at: index)
        } else {
            let memberKey = Self.memberKey(owner, group: group, joined: joined)
            guard plan.current(memberKey) != nil else { return nil }
            plan.set(memberKey, nil)
        }
        state.actorCount -= 1
        guard state.actorCount > 0 else {
            if !record.read { plan.addUnread(owner, -1) }
            plan.set(key, nil)
            if plan.current(head) != nil { plan.set(head, nil) }
            let openKey = Self.openGroupKey(owner: owner, action: record.action, resourceType: record.resourceType, resourceID: record.resourceID)
            if plan.current(openKey)?["group"]?.stringValue == group { plan.set(openKey, nil) }
            return .deleted
        }
        if state.actors.count < min(NotificationGroup.shown, Int(clamping: state.actorCount)) {
            // The newest stored member takes the free place: one this batch
            // stored (newer than any stored before), else the newest read.
            guard let read = members[head] else { return .needsMembers(head) }
            let candidates = (stored[head] ?? []).reversed() + read.map(\.key)
            if let next = candidates.first(where: { plan.current($0) != nil }),
               let actor = plan.current(next).flatMap({ GroupActor(attributes: $0.attributes) }) {
                state.actors.append(actor)
                plan.set(next, nil)
            }
        }
        var updated = record
        updated.group = state
        if let newest = state.actors.first { updated.show(newest) }
        updated = rendered(updated)
        var attributes = updated.attributes
        if let expiry = plan.current(key)?[Self.expiryAttribute] { attributes[Self.expiryAttribute] = expiry }
        plan.set(key, Item(key: key, attributes: attributes))
        return .updated(updated)
    }

    // MARK: Retention

    /// Deletes up to `limit` expired items (notifications, their action-key
    /// items, idempotency markers), each under ``Condition/expired``, and
    /// lowers the unread counters by the unread notifications among them,
    /// in one transaction per chunk. Returns how many it deleted. When
    /// another sweeper (or a write) got to one of the items first, it stops
    /// and leaves the rest to that sweeper or to the next call.
    public func removeExpired(limit: Int = 1_000) async throws(KeyValueStoreError) -> Int {
        var removed = 0
        while removed < limit {
            let items = try await store.expiredItems(limit: min(Self.expiryChunk, limit - removed))
            if items.isEmpty { break }
            var actions = items.map { WriteAction.delete($0.key, condition: .expired) }
            var unread: [String: Int64] = [:]
            for item in items where item.key.sort.hasPrefix("N#") && item["read"]?.boolValue == false {
                unread[item.key.partition, default: 0] -= 1
            }
            for (partition, delta) in unread.sorted(by: { $0.key < $1.key }) {
                actions.append(.update(Self.counterKey(partition: partition), Update(add: ["unread": delta])))
            }
            do {
                try await store.transactWriteItems(actions)
                removed += items.count
            } catch where error.isConditionFailure {
                return removed
            }
        }
        return removed
    }

    /// Items removed per transaction (DynamoDB allows 100 actions; the
    /// counters of up to as many partitions come on top).
    static let expiryChunk = 50

    // MARK: Outbox

    static func outboxItem(id: String, _ references: [OutboxReference]) -> Item {
        Item(key: ItemKey(partition: outboxPartition, sort: id), attributes: ["refs": .binary(OutboxReference.encode(references))])
    }

    /// Outbox batches not yet published, oldest first (at most `limit`),
    /// with their bodies rebuilt from the notifications. A created message
    /// whose notification is gone is left out: a later deleted message
    /// (in this outbox or another) covers it; an updated one whose
    /// notification is gone becomes a deleted message for the id it replaced.
    ///
    /// - Parameter committedBefore: only outboxes committed before this
    ///   Unix millisecond (their ids begin with their commit time).
    public func pendingOutboxes(limit: Int = 1_000, committedBefore: UInt64? = nil) async throws(KeyValueStoreError) -> [OutboxBatch] {
        let before = committedBefore.map { SortKeyCondition.lessThan(NotificationIDGenerator.encode(millisecond: $0, high: 0, low: 0)) }
        let page = try await store.query(Query(partition: Self.outboxPartition, sortKey: before, limit: limit))
        var pending: [(String, [OutboxReference])] = []
        var keys: [ItemKey] = []
        for item in page.items {
            guard let bytes = item["refs"]?.binaryValue, let references = OutboxReference.decode(bytes) else {
                throw KeyValueStoreError(code: .corrupt, message: "outbox item \(item.key) cannot be read")
            }
            pending.append((item.key.sort, references))
            for reference in references {
                switch reference.kind {
                case .created, .updated: keys.append(Self.notificationKey(reference.owner, reference.id))
                case .profile, .resource: keys.append(Self.announcedKey(reference))
                case .deleted: break
                }
            }
        }
        let notifications = try await store.batchGetItems(keys, consistentRead: true)
        return pending.map { id, references in
            let messages = references.compactMap { reference -> OutboundMessage? in
                switch reference.kind {
                case .deleted:
                    return .deleted(id: reference.id, owner: reference.owner, subjects: subjects)
                case .created:
                    guard let item = notifications[Self.notificationKey(reference.owner, reference.id)],
                          let record = NotificationRecord(attributes: item.attributes) else { return nil }
                    return .created(pictures.absolute(record), subjects: subjects)
                case .profile, .resource:
                    // Announces the profile or resource as it is now.
                    return announcement(reference, item: notifications[Self.announcedKey(reference)])
                case .updated:
                    let replaces = reference.replaces.isEmpty ? nil : reference.replaces
                    guard let item = notifications[Self.notificationKey(reference.owner, reference.id)],
                          let record = NotificationRecord(attributes: item.attributes) else {
                        // Folded again or emptied since: a later message
                        // carries the group; the id clients hold goes.
                        return replaces.map { .deleted(id: $0, owner: reference.owner, subjects: subjects) }
                    }
                    return .updated(pictures.absolute(record), replaces: replaces, subjects: subjects)
                }
            }
            let live = references.filter { $0.kind != .created || notifications[Self.notificationKey($0.owner, $0.id)] != nil }
            return OutboxBatch(id: id, messages: messages + dispatches(live))
        }
    }

    /// Outbox batches in the store (committed, not yet deleted after
    /// publishing), counting up to `limit`.
    public func outboxDepth(limit: Int = 10_000) async throws(KeyValueStoreError) -> Int {
        try await store.query(Query(partition: Self.outboxPartition, limit: limit)).items.count
    }

    /// Throws unless the store accepts a write now (one small item,
    /// rewritten) and the last batch did not fail for the store's sake: a
    /// full disk can still take the probe's page while batches fail.
    public func probeWrite() async throws(KeyValueStoreError) {
        if let fault = lastBatchFault.withLock({ $0 }) { throw fault }
        try await store.putItem(Item(key: ItemKey(partition: "HEALTH", sort: "probe"), attributes: [
            "at": .integer(RepositoryClock.milliseconds()),
        ]))
    }

    /// Forgets published outbox batches.
    public func deleteOutboxes(_ ids: [String]) async throws(KeyValueStoreError) {
        guard !ids.isEmpty else { return }
        try await store.batchWriteItems(ids.map { .delete(ItemKey(partition: Self.outboxPartition, sort: $0)) })
    }

    // MARK: Reading the feed

    /// The owner's notifications, newest first, older than `before` (an
    /// id), as clients see them (``enrich(_:)``).
    public func feed(owner: String, limit: Int, before: String? = nil) async throws(KeyValueStoreError) -> FeedPage {
        let (records, next) = try await storedFeed(owner: owner, limit: limit, before: before)
        return FeedPage(items: try await enrich(records), next: next)
    }

    /// Who the owner's newest `limit` notifications show (their actors and
    /// shown group actors), as stored: no enrichment read.
    public func newestActors(owner: String, limit: Int) async throws(KeyValueStoreError) -> [String] {
        try await storedFeed(owner: owner, limit: limit, before: nil).records.flatMap(\.actorIDs)
    }

    /// A page of the owner's notifications as stored, and the next cursor.
    private func storedFeed(
        owner: String, limit: Int, before: String?
    ) async throws(KeyValueStoreError) -> (records: [NotificationRecord], next: String?) {
        let partition = Self.partition(owner)
        let page = try await store.query(Query(
            partition: partition,
            sortKey: before.map { .between("N#", "N#" + $0) } ?? .beginsWith("N#"),
            limit: limit + 1,
            scanForward: false,
            exclusiveStartKey: before.map { ItemKey(partition: partition, sort: "N#" + $0) }))
        var records: [NotificationRecord] = []
        for item in page.items.prefix(limit) {
            guard let record = NotificationRecord(attributes: item.attributes) else {
                throw KeyValueStoreError(code: .corrupt, message: "notification item \(item.key) cannot be read")
            }
            records.append(record)
        }
        return (records, page.items.count > limit ? records.last?.id : nil)
    }

    /// The actors of one of the owner's notifications, newest first, older
    /// than `before` (a cursor from an earlier page); `nil` when the owner
    /// has no live notification `id`. A notification that is not a group
    /// has one actor.
    public func actors(owner: String, notification id: String, limit: Int, before: String? = nil) async throws(KeyValueStoreError) -> ActorPage? {
        guard let item = try await store.getItem(Self.notificationKey(owner, id)) else { return nil }
        guard let record = NotificationRecord(attributes: item.attributes) else {
            throw KeyValueStoreError(code: .corrupt, message: "notification item \(item.key) cannot be read")
        }
        guard let group = record.group else {
            return ActorPage(items: before == nil ? try await enrich([GroupActor(record)]) : [], next: nil, count: 1)
        }
        // The shown actors are the newest; the stored members are older.
        var actors = group.actors.filter { before == nil || $0.joined < before! }
        let prefix = "M#" + group.id + "#"
        let partition = Self.partition(owner)
        if actors.count <= limit {
            let fromStored = before.flatMap { cursor in group.actors.contains { $0.joined < cursor } ? nil : cursor }
            let page = try await store.query(Query(
                partition: partition,
                sortKey: fromStored.map { .between(prefix, prefix + $0) } ?? .beginsWith(prefix),
                limit: limit + 1 - actors.count,
                scanForward: false,
                exclusiveStartKey: fromStored.map { ItemKey(partition: partition, sort: prefix + $0) }))
            for item in page.items {
                guard let actor = GroupActor(attributes: item.attributes) else {
                    throw KeyValueStoreError(code: .corrupt, message: "group member \(item.key) cannot be read")
                }
                actors.append(actor)
            }
        }
        let more = actors.count > limit
        let items = Array(actors.prefix(limit))
        return ActorPage(items: try await enrich(items), next: more ? items.last?.joined : nil, count: group.actorCount)
    }

    /// The owner's preferences (none set: nothing muted, no quiet hours).
    public func preferences(owner: String) async throws(KeyValueStoreError) -> Preferences {
        guard let item = try await store.getItem(Self.preferencesKey(owner)) else { return Preferences() }
        return Preferences(attributes: item.attributes)
    }

    /// Replaces the owner's preferences; the worker applies them to the
    /// events it takes from then on.
    public func setPreferences(_ preferences: Preferences, owner: String) async throws(KeyValueStoreError) {
        let key = Self.preferencesKey(owner)
        var attributes = preferences.attributes
        attributes["updated_at"] = .integer(clock())
        try await store.putItem(Item(key: key, attributes: attributes))
    }

    /// How many of the owner's notifications are unread.
    public func unreadCount(owner: String) async throws(KeyValueStoreError) -> Int64 {
        try await store.getItem(Self.counterKey(owner))?["unread"]?.integerValue ?? 0
    }

    /// The owner's live notifications created after `id` (exclusive), oldest
    /// first, at most `limit`, as clients see them; for resuming a live feed.
    public func notifications(owner: String, after id: String, limit: Int) async throws(KeyValueStoreError) -> [NotificationRecord] {
        let partition = Self.partition(owner)
        let page = try await store.query(Query(
            partition: partition,
            sortKey: .between("N#" + id, "N#\u{10FFFF}"),
            limit: limit,
            exclusiveStartKey: ItemKey(partition: partition, sort: "N#" + id)))
        return try await enrich(try page.items.map { item throws(KeyValueStoreError) in
            guard let record = NotificationRecord(attributes: item.attributes) else {
                throw KeyValueStoreError(code: .corrupt, message: "notification item \(item.key) cannot be read")
            }
            return record
        })
    }

    /// Marks the owner's notifications among `ids` read; returns the ids
    /// that went from unread to read (unknown, deleted and already read ids
    /// are left out). The items and the unread counter change in one
    /// transaction.
    public func markRead(owner: String, ids: [String]) async throws(KeyValueStoreError) -> [String] {
        var unique: [String] = []
        var seen = Set<String>()
        for id in ids where seen.insert(id).inserted { unique.append(id) }
        var changed: [String] = []
        for chunk in stride(from: 0, to: unique.count, by: markReadChunk) {
            let part = Array(unique[chunk..<min(chunk + markReadChunk, unique.count)])
            changed += try await markReadOnce(owner: owner, keys: part.map { Self.notificationKey(owner, $0) })
        }
        return changed
    }

    /// Marks every unread notification of the owner read; returns their ids.
    public func markAllRead(owner: String) async throws(KeyValueStoreError) -> [String] {
        let partition = Self.partition(owner)
        var changed: [String] = []
        var start: ItemKey?
        repeat {
            let page = try await store.query(Query(
                partition: partition, sortKey: .beginsWith("N#"), limit: markReadChunk, exclusiveStartKey: start))
            let unread = page.items.filter { $0["read"]?.boolValue == false }.map(\.key)
            if !unread.isEmpty { changed += try await markReadOnce(owner: owner, keys: unread) }
            start = page.lastEvaluatedKey
        } while start != nil
        return changed
    }

    /// Records that clients received (`delivered`) or showed (`seen`) the
    /// given notifications: each gets `delivered_at` (and `seen_at`) set to
    /// now once, a seen one is delivered too. Unknown and deleted ids are
    /// skipped. Returns how many notifications each kind changed.
    public func recordReceipts(_ receipts: [Receipt]) async throws(KeyValueStoreError) -> (delivered: Int, seen: Int) {
        var wanted: [ItemKey: Receipt.Kind] = [:]
        for receipt in receipts {
            let key = Self.notificationKey(receipt.owner, receipt.id)
            if wanted[key] != .seen { wanted[key] = receipt.kind }
        }
        var keys = wanted.keys.sorted { ($0.partition, $0.sort) < ($1.partition, $1.sort) }
        var changed = (delivered: 0, seen: 0)
        let chunk = max(1, store.transactionActionLimit)
        while !keys.isEmpty {
            let part = Array(keys.prefix(chunk))
            keys.removeFirst(part.count)
            let counts = try await recordReceiptsOnce(part, wanted: wanted)
            changed.delivered += counts.delivered
            changed.seen += counts.seen
        }
        return changed
    }

    private func recordReceiptsOnce(_ keys: [ItemKey], wanted: [ItemKey: Receipt.Kind]) async throws(KeyValueStoreError) -> (delivered: Int, seen: Int) {
        var attempt = 1
        while true {
            let now = clock()
            let found = try await store.batchGetItems(keys, consistentRead: true)
            var actions: [WriteAction] = []
            var ages: [(Receipt.Kind, Int64)] = []
            var counts = (delivered: 0, seen: 0)
            for key in keys {
                guard let item = found[key], let kind = wanted[key] else { continue }
                var set: [String: AttributeValue] = [:]
                var conditions: [Condition] = [.itemExists]
                let received = item["received_at"]?.integerValue ?? now
                if item["delivered_at"] == nil {
                    set["delivered_at"] = .integer(now)
                    conditions.append(.attributeNotExists("delivered_at"))
                    counts.delivered += 1
                    ages.append((.delivered, now - received))
                }
                if kind == .seen, item["seen_at"] == nil {
                    set["seen_at"] = .integer(now)
                    conditions.append(.attributeNotExists("seen_at"))
                    counts.seen += 1
                    ages.append((.seen, now - received))
                }
                if !set.isEmpty { actions.append(.update(key, Update(set: set), condition: .and(conditions))) }
            }
            guard !actions.isEmpty else { return (0, 0) }
            do {
                try await store.transactWriteItems(actions)
                for (kind, age) in ages { ReceiptMetrics.shared.recorded(kind, after: age) }
                return counts
            } catch where error.isConditionFailure && attempt < Self.maxPlanAttempts {
                // Another tab's receipt, or a retraction, came first: read again.
                attempt += 1
            }
        }
    }

    /// Notifications marked read per transaction (with their counter);
    /// half as many with ``readRetention``, which shortens each one's
    /// action-key pointer with it.
    var markReadChunk: Int { min(500, (store.transactionActionLimit - 1) / (readRetention == nil ? 1 : 2)) }

    private func markReadOnce(owner: String, keys: [ItemKey]) async throws(KeyValueStoreError) -> [String] {
        var attempt = 1
        while true {
            let found = try await store.batchGetItems(keys, consistentRead: true)
            let unread = keys.compactMap { key -> Item? in found[key].flatMap { $0["read"]?.boolValue == false ? $0 : nil } }
            guard !unread.isEmpty else { return [] }
            let now = clock()
            var actions: [WriteAction] = []
            if let readRetention {
                actions = try await shortenedOnRead(owner: owner, unread, keepFor: readRetention, now: now)
            } else {
                actions = unread.map { .update($0.key, Update(set: ["read": true, "read_at": .integer(now)]), condition: .equals("read", false)) }
            }
            actions.append(.update(Self.counterKey(owner), Update(add: ["unread": -Int64(unread.count)])))
            do {
                try await store.transactWriteItems(actions)
                for item in unread {
                    if let received = item["received_at"]?.integerValue { ReceiptMetrics.shared.read(after: now - received) }
                }
                return unread.map { String($0.key.sort.dropFirst(2)) }
            } catch where error.isConditionFailure && attempt < Self.maxPlanAttempts {
                // Marked read or deleted meanwhile (another tab, a retraction): read again.
                attempt += 1
            }
        }
    }

    /// Marks `unread` read and brings each one's expiry to `keepFor` from
    /// now (unless it expires sooner), with the action-key pointer of a
    /// notification that has one: a pointer outliving its notification
    /// would make a later like a duplicate of nothing. A group's pointers
    /// lead through the group, which is gone with its notification.
    private func shortenedOnRead(owner: String, _ unread: [Item], keepFor: Duration, now: Int64) async throws(KeyValueStoreError) -> [WriteAction] {
        let expiry = now / 1000 + keepFor.components.seconds
        var pointerKeys: [ItemKey] = []
        for item in unread where item["group_id"] == nil {
            if let actionKey = item["action_key"]?.stringValue { pointerKeys.append(Self.actionKey(owner, actionKey)) }
        }
        let pointers = try await store.batchGetItems(pointerKeys, consistentRead: true)
        var actions: [WriteAction] = []
        for item in unread {
            let shortened = min(item[Self.expiryAttribute]?.integerValue ?? .max, expiry)
            actions.append(.update(
                item.key, Update(set: ["read": true, "read_at": .integer(now), Self.expiryAttribute: .integer(shortened)]),
                condition: .equals("read", false)))
            guard item["group_id"] == nil, let id = item["id"], let actionKey = item["action_key"]?.stringValue,
                  let pointer = pointers[Self.actionKey(owner, actionKey)], pointer["id"] == id,
                  pointer[Self.expiryAttribute]?.integerValue ?? .max > shortened else { continue }
            actions.append(.update(pointer.key, Update(set: [Self.expiryAttribute: .integer(shortened)]), condition: .equals("id", id)))
        }
        return actions
    }
}

/// What a batch read and what it will write, key by key.
struct BatchPlan {
    /// Every key read, with what was there (absent keys are in `readKeys`
    /// but not in `original`).
    private(set) var readKeys = Set<ItemKey>()
    private var original: [ItemKey: Item] = [:]
    /// Planned state of each key the batch changes (`nil` = deleted).
    private var changed: [ItemKey: Item?] = [:]
    /// Keys of notifications created by this batch (ids are fresh).
    private var fresh = Set<ItemKey>()
    /// Keys read that must still be as read when the batch commits.
    private var checked = Set<ItemKey>()
    /// Order of first change, for a stable transaction.
    private var order: [ItemKey] = []
    private var unread: [String: Int64] = [:]
    private var owners: [String] = []

    mutating func record(read keys: Set<ItemKey>, found: [ItemKey: Item]) {
        // The first read of a batch (most of it) is taken as is, not rehashed.
        if readKeys.isEmpty { readKeys = keys } else { readKeys.formUnion(keys) }
        if original.isEmpty { original = found } else { original.merge(found) { _, new in new } }
    }

    func current(_ key: ItemKey) -> Item? {
        if let planned = changed[key] { return planned }
        return original[key]
    }

    mutating func set(_ key: ItemKey, _ item: Item?, fresh isFresh: Bool = false) {
        if changed.updateValue(item, forKey: key) == nil { order.append(key) }
        if isFresh { fresh.insert(key) }
    }

    /// The transaction fails (and the batch plans again) if `key` changed
    /// since it was read; a no-op for a key the batch changes.
    mutating func check(_ key: ItemKey) {
        checked.insert(key)
    }

    mutating func addUnread(_ owner: String, _ delta: Int64) {
        if unread[owner] == nil { owners.append(owner) }
        unread[owner, default: 0] += delta
    }

    /// One action per changed key, each conditional on what was read.
    func actions(counterKey: (String) -> ItemKey) -> [WriteAction] {
        var actions: [WriteAction] = []
        actions.reserveCapacity(order.count + owners.count)
        for key in order {
            guard let final = changed[key] else { continue }
            let before = original[key]
            switch (before, final) {
            case (nil, nil):
                // Created and removed within the batch. A new notification
                // id needs nothing; any other key must still be absent.
                if !fresh.contains(key) { actions.append(.conditionCheck(key, .itemNotExists)) }
            case (nil, let item?):
                actions.append(.put(item, condition: .itemNotExists))
            case (let item?, nil):
                actions.append(.delete(key, condition: .matches(item)))
            case (let old?, let new?):
                if old != new { actions.append(.put(new, condition: .matches(old))) }
            }
        }
        for key in checked where changed[key] == nil {
            actions.append(.conditionCheck(key, original[key].map { .matches($0) } ?? .itemNotExists))
        }
        for owner in owners {
            if let delta = unread[owner], delta != 0 {
                actions.append(.update(counterKey(owner), Update(add: ["unread": delta])))
            }
        }
        return actions
    }
}

/// The wall clock the repository stamps notifications with.
public enum RepositoryClock {
    /// Unix milliseconds.
    @Sendable public static func milliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A store fault shared between copies of a repository (the worker's and
/// the health endpoint's).
private final class SharedFault: Sendable {
    private let state = Mutex<KeyValueStoreError?>(nil)

    func withLock<T>(_ body: (inout KeyValueStoreError?) -> T) -> T {
        state.withLock { body(&$0) }
    }
}
