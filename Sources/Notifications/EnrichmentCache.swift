import KeyValueStore
import JSON
import Synchronization

/// Profiles and resources read lately, so a feed page rarely reads them.
///
/// Caching is off until ``follow()``: whoever calls it applies every
/// change workers publish (``forget(_:)``), as the gateway does from the
/// profile and resource subjects, and clears the cache when it may have
/// missed some (a NATS reconnect). Entries also expire after
/// ``lifetime``, in case a change was lost anyway. A read that began
/// before a change was announced cannot put back what the change replaced:
/// entries only move forward in `updated_at`.
public final class EnrichmentCache: Sendable {
    private struct Entry {
        /// `nil`: nothing stored (or, when ``stale``, not known).
        var item: Item?
        /// The entry's `updated_at`; `Int64.min` for nothing stored.
        var version: Int64
        var storedAt: ContinuousClock.Instant
        /// A newer version was announced: a read must bring at least it.
        var stale = false
    }

    private struct State {
        var following = false
        var entries: [ItemKey: Entry] = [:]
    }

    private let state = Mutex(State())
    /// The most entries kept.
    public let capacity: Int
    /// How long an entry is trusted without a change announced.
    public let lifetime: Duration

    public init(capacity: Int = 100_000, lifetime: Duration = .seconds(300)) {
        self.capacity = capacity
        self.lifetime = lifetime
    }

    /// Starts caching: changes will be applied from now on.
    public func follow() {
        state.withLock { $0.following = true }
    }

    /// Forgets everything: changes may have been missed.
    public func clear() {
        state.withLock { $0.entries.removeAll() }
    }

    /// How many entries are held.
    public var count: Int { state.withLock { $0.entries.count } }

    /// Marks what `change` replaced as stale.
    public func forget(_ change: PublishedChange) {
        let key = change.key
        state.withLock { state in
            guard state.following else { return }
            if let entry = state.entries[key], entry.version > change.updatedAt { return }
            state.entries[key] = Entry(item: nil, version: change.updatedAt, storedAt: .now, stale: true)
        }
    }

    /// The cached items of `keys` (absent ones as absent); the keys not
    /// cached are left in `keys`.
    func lookUp(_ keys: inout [ItemKey]) -> [ItemKey: Item] {
        let now = ContinuousClock.now
        return state.withLock { state -> [ItemKey: Item] in
            guard state.following, !state.entries.isEmpty else { return [:] }
            var found: [ItemKey: Item] = [:]
            keys.removeAll { key in
                guard let entry = state.entries[key], !entry.stale, now - entry.storedAt < lifetime else { return false }
                if let item = entry.item { found[key] = item }
                return true
            }
            return found
        }
    }

    /// Keeps what a read found (`nil`: nothing stored), unless a newer
    /// version is cached or announced.
    func store(_ read: [(ItemKey, Item?)]) {
        let now = ContinuousClock.now
        state.withLock { state in
            guard state.following else { return }
            if state.entries.count + read.count > capacity { evict(&state, now: now) }
            for (key, item) in read {
                let version = item?["updated_at"]?.integerValue ?? .min
                if let entry = state.entries[key], entry.version > version { continue }
                state.entries[key] = Entry(item: item, version: version, storedAt: now)
            }
        }
    }

    /// Drops expired entries, then any half when that is not enough.
    private func evict(_ state: inout State, now: ContinuousClock.Instant) {
        state.entries = state.entries.filter { now - $0.value.storedAt < lifetime }
        if state.entries.count > capacity / 2 {
            var kept = 0
            state.entries = state.entries.filter { _ in
                kept += 1
                return kept <= capacity / 2
            }
        }
    }
}

/// A profile or resource change a worker announced (on
/// `<profiles>.<user>.updated` or `<resources>.updated`).
public struct PublishedChange: Sendable, Hashable {
    public enum Subject: Sendable, Hashable {
        case profile(user: String)
        case resource(ResourceReference)
    }

    public let subject: Subject
    /// Unix seconds.
    public let updatedAt: Int64

    public init(subject: Subject, updatedAt: Int64) {
        self.subject = subject
        self.updatedAt = updatedAt
    }

    /// The change a message body announces; `nil` for anything else.
    public init?(message: [UInt8]) {
        guard case .object(let object)? = try? JSONParser.parse(message) else { return nil }
        switch object["type"] {
        case .string("profile.updated")?:
            guard case .string(let user)? = object["user"], case .object(let profile)? = object["profile"],
                  case .integer(let updatedAt)? = profile["updated_at"] else { return nil }
            self.init(subject: .profile(user: user), updatedAt: updatedAt)
        case .string("resource.updated")?:
            guard case .object(let resource)? = object["resource"], case .string(let type)? = resource["resource_type"],
                  case .string(let id)? = resource["resource_id"], case .integer(let updatedAt)? = resource["updated_at"] else { return nil }
            self.init(subject: .resource(ResourceReference(type: type, id: id)), updatedAt: updatedAt)
        default:
            return nil
        }
    }

    var key: ItemKey {
        switch subject {
        case .profile(let user): NotificationRepository.profileKey(user)
        case .resource(let resource): NotificationRepository.resourceKey(resource)
        }
    }
}
