import Synchronization

/// The reference implementation of ``KeyValueStore``: everything in memory,
/// one lock, no persistence. It defines the expected behaviour in the
/// conformance suite and serves tests that need a store but not a file.
public final class InMemoryKeyValueStore: KeyValueStore {
    private struct State {
        var partitions: [String: [ItemKey: Item]] = [:]
    }

    private let state = Mutex(State())
    private let timeToLive: TimeToLive?
    private let clock: StoreClock

    /// - Parameters:
    ///   - timeToLive: the TTL attribute, or `nil` for items that never expire.
    ///   - clock: the time used to decide expiry.
    public init(timeToLive: TimeToLive? = TimeToLive(), clock: StoreClock = .system) {
        self.timeToLive = timeToLive
        self.clock = clock
    }

    private func live(_ item: Item?, now: Int64) -> Item? {
        isExpired(item, now: now) ? nil : item
    }

    private func isExpired(_ item: Item?, now: Int64) -> Bool {
        guard let item, let timeToLive else { return false }
        return timeToLive.isExpired(item.attributes, now: now)
    }

    private func validate(_ key: ItemKey) throws(KeyValueStoreError) {
        if key.partition.isEmpty { throw .validation("the partition key of \(key) is empty") }
        if key.sort.isEmpty { throw .validation("the sort key of \(key) is empty") }
    }

    public func getItem(_ key: ItemKey, consistentRead: Bool) async throws(KeyValueStoreError) -> Item? {
        try validate(key)
        let now = clock.now()
        return state.withLock { live($0.partitions[key.partition]?[key], now: now) }
    }

    public func batchGetItems(_ keys: [ItemKey], consistentRead: Bool) async throws(KeyValueStoreError) -> [ItemKey: Item] {
        for key in keys { try validate(key) }
        let now = clock.now()
        return state.withLock { state in
            var found: [ItemKey: Item] = [:]
            for key in keys {
                if let item = live(state.partitions[key.partition]?[key], now: now) { found[key] = item }
            }
            return found
        }
    }

    @discardableResult
    public func putItem(_ item: Item, condition: Condition?) async throws(KeyValueStoreError) -> Item? {
        try validate(item.key)
        let now = clock.now()
        return try state.withLock { (state) throws(KeyValueStoreError) -> Item? in
            let stored = state.partitions[item.key.partition]?[item.key]
            let expired = isExpired(stored, now: now)
            if let condition, !condition.isSatisfied(by: stored, expired: expired) { throw .conditionFailed(item.key) }
            let old = expired ? nil : stored
            state.partitions[item.key.partition, default: [:]][item.key] = item
            return old
        }
    }

    @discardableResult
    public func deleteItem(_ key: ItemKey, condition: Condition?) async throws(KeyValueStoreError) -> Item? {
        try validate(key)
        let now = clock.now()
        return try state.withLock { (state) throws(KeyValueStoreError) -> Item? in
            let stored = state.partitions[key.partition]?[key]
            let expired = isExpired(stored, now: now)
            if let condition, !condition.isSatisfied(by: stored, expired: expired) { throw .conditionFailed(key) }
            let old = expired ? nil : stored
            state.partitions[key.partition]?[key] = nil
            return old
        }
    }

    @discardableResult
    public func updateItem(_ key: ItemKey, _ update: Update, condition: Condition?) async throws(KeyValueStoreError) -> Item {
        try validate(key)
        let now = clock.now()
        return try state.withLock { (state) throws(KeyValueStoreError) -> Item in
            let stored = state.partitions[key.partition]?[key]
            let expired = isExpired(stored, now: now)
            if let condition, !condition.isSatisfied(by: stored, expired: expired) { throw .conditionFailed(key) }
            let old = expired ? nil : stored
            let new = try update.applied(to: old, key: key)
            state.partitions[key.partition, default: [:]][key] = new
            return new
        }
    }

    public func query(_ query: Query) async throws(KeyValueStoreError) -> QueryPage {
        try query.validate()
        let now = clock.now()
        let candidates: [Item] = state.withLock { state in
            guard let partition = state.partitions[query.partition] else { return [] }
            return partition.values.filter { item in
                live(item, now: now) != nil && (query.sortKey?.matches(item.key.sort) ?? true)
            }
        }
        var ordered = candidates.sorted { $0.key < $1.key }
        if !query.scanForward { ordered.reverse() }
        if let start = query.exclusiveStartKey {
            ordered = ordered.filter { query.scanForward ? start < $0.key : $0.key < start }
        }
        guard let limit = query.limit, ordered.count >= limit else {
            return QueryPage(items: ordered, lastEvaluatedKey: nil)
        }
        let page = Array(ordered.prefix(limit))
        return QueryPage(items: page, lastEvaluatedKey: page.last?.key)
    }

    public func transactWriteItems(_ actions: [WriteAction]) async throws(KeyValueStoreError) {
        try actions.validateTransaction()
        for action in actions { try validate(action.key) }
        let now = clock.now()
        try state.withLock { (state) throws(KeyValueStoreError) in
            var reasons: [KeyValueStoreError.CancellationReason] = []
            reasons.reserveCapacity(actions.count)
            var current: [Item?] = []
            current.reserveCapacity(actions.count)
            for action in actions {
                let stored = state.partitions[action.key.partition]?[action.key]
                let expired = isExpired(stored, now: now)
                current.append(expired ? nil : stored)
                let holds = action.condition?.isSatisfied(by: stored, expired: expired) ?? true
                reasons.append(holds ? .none : .conditionalCheckFailed)
            }
            if reasons.contains(.conditionalCheckFailed) {
                throw KeyValueStoreError(
                    code: .transactionCanceled,
                    message: "nothing was written",
                    cancellationReasons: reasons
                )
            }
            // Compute every new item before writing any, so a failing update
            // leaves the store untouched.
            var writes: [(ItemKey, Item?)] = []
            for (index, action) in actions.enumerated() {
                switch action {
                case .put(let item, _): writes.append((item.key, item))
                case .delete(let key, _): writes.append((key, nil))
                case .update(let key, let update, _): writes.append((key, try update.applied(to: current[index], key: key)))
                case .conditionCheck: break
                }
            }
            for (key, item) in writes {
                state.partitions[key.partition, default: [:]][key] = item
            }
        }
    }

    public func batchWriteItems(_ requests: [BatchWriteRequest]) async throws(KeyValueStoreError) {
        for request in requests { try validate(request.key) }
        state.withLock { state in
            for request in requests {
                switch request {
                case .put(let item): state.partitions[item.key.partition, default: [:]][item.key] = item
                case .delete(let key): state.partitions[key.partition]?[key] = nil
                }
            }
        }
    }

    public func expiredItems(limit: Int) async throws(KeyValueStoreError) -> [Item] {
        guard let timeToLive, limit > 0 else { return [] }
        let now = clock.now()
        let expired = state.withLock { state in
            state.partitions.values.flatMap { items in
                items.values.compactMap { item in
                    timeToLive.expiry(of: item.attributes).flatMap { $0 <= now ? ($0, item) : nil }
                }
            }
        }
        return expired.sorted { ($0.0, $0.1.key) < ($1.0, $1.1.key) }.prefix(limit).map(\.1)
    }
}
