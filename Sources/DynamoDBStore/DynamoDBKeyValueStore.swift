public import KeyValueStore
import JSON
public import Logging
import Synchronization

/// ``KeyValueStore`` on Amazon DynamoDB (or a compatible server), over its
/// HTTP JSON API with Signature V4.
///
/// One table with a string partition key `pk` and string sort key `sk`
/// (``createTable()`` makes it); every other attribute is stored as itself.
/// Expired items are invisible to reads and conditions before DynamoDB's
/// own TTL removes them, as on every store. Reads that decide writes are
/// strongly consistent; queries too, so a feed shows what was just written.
public struct DynamoDBKeyValueStore: KeyValueStore {
    /// DynamoDB's limits, which this store splits requests by or rejects.
    public static let maxTransactionActions = 100
    static let maxBatchGetKeys = 100
    static let maxBatchWriteRequests = 25
    /// Named by an empty update inside a transaction; never stored.
    static let unusedAttribute = "__notify_unused"

    public let configuration: DynamoDBConfiguration
    let client: DynamoDBClient
    private let layout: TableLayout
    private let timeToLive: TimeToLive?
    private let clock: StoreClock
    /// Where the next ``expiredItems(limit:)`` scan starts; `nil`: at the
    /// beginning of the table.
    private let scanPosition = SharedScanPosition(nil)

    /// - Parameters:
    ///   - timeToLive: the TTL attribute, or `nil` for items that never expire.
    ///   - clock: the time used to decide expiry.
    public init(
        configuration: DynamoDBConfiguration,
        timeToLive: TimeToLive? = TimeToLive(),
        clock: StoreClock = .system,
        logger: Logger = Logger(label: "notify.dynamodb")
    ) throws(KeyValueStoreError) {
        self.configuration = configuration
        self.client = try DynamoDBClient(configuration: configuration, logger: logger)
        self.layout = TableLayout(tableName: configuration.tableName)
        self.timeToLive = timeToLive
        self.clock = clock
    }

    public var transactionActionLimit: Int { Self.maxTransactionActions }

    // MARK: Calls and errors

    private var table: JSONValue { .string(configuration.tableName) }

    func call(_ operation: String, _ request: [String: JSONValue]) async throws(KeyValueStoreError) -> JSONValue {
        do {
            return try await client.call(operation, request)
        } catch {
            throw mapped(error, operation: operation)
        }
    }

    func mapped(_ error: DynamoDBCallError, operation: String) -> KeyValueStoreError {
        let service: DynamoDBServiceError
        switch error {
        case .transport(let message):
            return KeyValueStoreError(code: .unavailable, message: "DynamoDB cannot be reached: \(message)")
        case .service(let answered):
            service = answered
        }
        let text = "\(operation) on table '\(configuration.tableName)': \(service.type): \(service.message)"
        switch service.type {
        case "ConditionalCheckFailedException":
            return KeyValueStoreError(code: .conditionalCheckFailed, message: text)
        case "ValidationException", "SerializationException":
            return KeyValueStoreError(code: .validation, message: text)
        case "ResourceNotFoundException":
            return KeyValueStoreError(
                code: .unavailable,
                message: "\(text). Create the table with `notify store create-table` (endpoint \(configuration.endpoint), region \(configuration.region))")
        case "UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException",
             "MissingAuthenticationTokenException", "ExpiredTokenException", "IncompleteSignatureException":
            return KeyValueStoreError(
                code: .unavailable,
                message: "\(text). Check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION")
        default:
            if service.isRetryable {
                return KeyValueStoreError(
                    code: .unavailable, message: "\(text) (still failing after \(configuration.maxAttempts) attempts)")
            }
            return KeyValueStoreError(code: .internalError, message: text)
        }
    }

    private func now() -> Int64 { clock.now() }

    private func live(_ item: Item?, now: Int64) -> Item? {
        guard let item, let timeToLive, timeToLive.isExpired(item.attributes, now: now) else { return item }
        return nil
    }

    // MARK: Reads

    public func getItem(_ key: ItemKey, consistentRead: Bool) async throws(KeyValueStoreError) -> Item? {
        let now = now()
        return live(try await storedItem(key, consistentRead: consistentRead), now: now)
    }

    /// The item as stored, expired or not.
    private func storedItem(_ key: ItemKey, consistentRead: Bool) async throws(KeyValueStoreError) -> Item? {
        let response = try await call("GetItem", [
            "TableName": table, "Key": try layout.key(key), "ConsistentRead": .bool(consistentRead),
        ])
        return try layout.item(response["Item"])
    }

    public func batchGetItems(_ keys: [ItemKey], consistentRead: Bool) async throws(KeyValueStoreError) -> [ItemKey: Item] {
        let now = now()
        return try await storedItems(keys, consistentRead: consistentRead).filter { live($0.value, now: now) != nil }
    }

    /// The stored items among `keys`, expired or not, read 100 keys per
    /// request; keys DynamoDB leaves unprocessed (throttling) are asked for
    /// again after a pause.
    private func storedItems(_ keys: [ItemKey], consistentRead: Bool) async throws(KeyValueStoreError) -> [ItemKey: Item] {
        var unique: [ItemKey] = []
        var seen = Set<ItemKey>()
        for key in keys where seen.insert(key).inserted {
            try TableLayout.validate(key)
            unique.append(key)
        }
        var found: [ItemKey: Item] = [:]
        for start in stride(from: 0, to: unique.count, by: Self.maxBatchGetKeys) {
            var pending: [JSONValue] = []
            for key in unique[start..<min(start + Self.maxBatchGetKeys, unique.count)] { pending.append(try layout.key(key)) }
            var round = 0
            while !pending.isEmpty {
                if round > 0 { try await pause(round: round, what: "BatchGetItem") }
                round += 1
                let response = try await call("BatchGetItem", [
                    "RequestItems": .object([configuration.tableName: .object([
                        "Keys": .array(pending), "ConsistentRead": .bool(consistentRead),
                    ])]),
                ])
                for value in response["Responses"]?[configuration.tableName]?.arrayValue ?? [] {
                    if let item = try layout.item(value) { found[item.key] = item }
                }
                pending = response["UnprocessedKeys"]?[configuration.tableName]?["Keys"]?.arrayValue ?? []
            }
        }
        return found
    }

    /// Waits before asking again for what DynamoDB left unprocessed; gives
    /// up (unavailable) after the configured number of attempts.
    private func pause(round: Int, what: String) async throws(KeyValueStoreError) {
        guard round < configuration.maxAttempts else {
            throw KeyValueStoreError(
                code: .unavailable,
                message: "\(what) on table '\(configuration.tableName)': DynamoDB left requests unprocessed \(round) times (throttled)")
        }
        try? await Task.sleep(for: configuration.backoff(attempt: round))
    }

    public func query(_ query: Query) async throws(KeyValueStoreError) -> QueryPage {
        try query.validate()
        let now = now()
        var items: [Item] = []
        var start = query.exclusiveStartKey
        // Expired items are left out here, so a page is filled from further
        // pages until it holds `limit` live items or the partition ends.
        while true {
            var expressions = Expressions(timeToLive: timeToLive, now: now)
            var request: [String: JSONValue] = [
                "TableName": table,
                "KeyConditionExpression": .string(try expressions.keyCondition(partition: query.partition, sortKey: query.sortKey)),
                "ScanIndexForward": .bool(query.scanForward),
                "ConsistentRead": .bool(true),
            ]
            expressions.members(into: &request)
            if let limit = query.limit { request["Limit"] = .integer(Int64(limit - items.count)) }
            if let start { request["ExclusiveStartKey"] = try layout.key(start) }
            let response = try await call("Query", request)
            for value in response["Items"]?.arrayValue ?? [] {
                if let item = live(try layout.item(value), now: now) { items.append(item) }
            }
            start = try layout.itemKey(response["LastEvaluatedKey"])
            if let limit = query.limit, items.count >= limit, let last = items.last {
                // As DynamoDB does (some emulators do not): a full page has
                // a key to continue from, even when nothing follows.
                return QueryPage(items: items, lastEvaluatedKey: last.key)
            }
            if start == nil { return QueryPage(items: items, lastEvaluatedKey: nil) }
        }
    }

    // MARK: Single writes

    @discardableResult
    public func putItem(_ item: Item, condition: Condition?) async throws(KeyValueStoreError) -> Item? {
        try await replace("PutItem", ["Item": try layout.item(item)], condition: condition)
    }

    @discardableResult
    public func deleteItem(_ key: ItemKey, condition: Condition?) async throws(KeyValueStoreError) -> Item? {
        try await replace("DeleteItem", ["Key": try layout.key(key)], condition: condition)
    }

    /// A `PutItem` or `DeleteItem` under `condition`; the item it replaced
    /// or deleted, unless that had expired.
    private func replace(_ operation: String, _ target: [String: JSONValue], condition: Condition?) async throws(KeyValueStoreError) -> Item? {
        let now = now()
        var expressions = Expressions(timeToLive: timeToLive, now: now)
        var request = target.merging(["TableName": table, "ReturnValues": "ALL_OLD"]) { _, new in new }
        if let condition, let text = try expressions.condition(condition) { request["ConditionExpression"] = .string(text) }
        expressions.members(into: &request)
        let response = try await call(operation, request)
        return live(try layout.item(response["Attributes"]), now: now)
    }

    @discardableResult
    public func updateItem(_ key: ItemKey, _ update: Update, condition: Condition?) async throws(KeyValueStoreError) -> Item {
        var removedExpired = false
        while true {
            let now = now()
            var expressions = Expressions(timeToLive: timeToLive, now: now)
            var request: [String: JSONValue] = ["TableName": table, "Key": try layout.key(key), "ReturnValues": "ALL_NEW"]
            if let text = try expressions.update(update, key: key) { request["UpdateExpression"] = .string(text) }
            let guarded = Expressions.all([try condition.flatMap { c throws(KeyValueStoreError) in try expressions.condition(c) }, expressions.notExpired()])
            if let guarded { request["ConditionExpression"] = .string(guarded) }
            expressions.members(into: &request)
            do throws(KeyValueStoreError) {
                let response = try await call("UpdateItem", request)
                guard let item = try layout.item(response["Attributes"]) else {
                    throw WireFormat.malformed("UpdateItem returned no attributes")
                }
                return item
            } catch where error.code == .conditionalCheckFailed && !removedExpired {
                // Perhaps the item had expired: an update must not keep its
                // attributes. Remove it and update what is then absent.
                guard try await removeIfExpired([key]) else {
                    throw KeyValueStoreError(code: .conditionalCheckFailed, message: "the condition on \(key) did not hold")
                }
                removedExpired = true
            }
        }
    }

    /// Deletes those of `keys` whose items are stored but expired (each
    /// under the condition that it still is); whether there was one.
    private func removeIfExpired(_ keys: [ItemKey]) async throws(KeyValueStoreError) -> Bool {
        guard let timeToLive else { return false }
        let now = now()
        let stored = try await storedItems(keys, consistentRead: true)
        let expired = stored.values.filter { timeToLive.isExpired($0.attributes, now: now) }
        for item in expired {
            do {
                try await deleteItem(item.key, condition: .expired)
            } catch where error.code == .conditionalCheckFailed {
                // Rewritten or removed meanwhile: nothing left to clear.
            }
        }
        return !expired.isEmpty
    }

    // MARK: Transactions and batches

    public func transactWriteItems(_ actions: [WriteAction]) async throws(KeyValueStoreError) {
        try actions.validateTransaction()
        guard actions.count <= Self.maxTransactionActions else {
            throw KeyValueStoreError(
                code: .validation,
                message: "a DynamoDB transaction holds at most \(Self.maxTransactionActions) actions, this one has \(actions.count)")
        }
        var removedExpired = false
        while true {
            // One token for every attempt of this request (the client's
            // retries): DynamoDB applies it once even when an answer was lost.
            let token = Self.requestToken()
            let now = now()
            var items: [JSONValue] = []
            items.reserveCapacity(actions.count)
            for action in actions { items.append(try transactItem(action, now: now)) }
            let request: [String: JSONValue] = ["TransactItems": .array(items), "ClientRequestToken": .string(token)]
            do throws(DynamoDBCallError) {
                _ = try await client.call("TransactWriteItems", request)
                return
            } catch {
                guard case .service(let service) = error, service.type == "TransactionCanceledException" else {
                    throw mapped(error, operation: "TransactWriteItems")
                }
                let reasons = (service.body?["CancellationReasons"]?.arrayValue ?? []).map { $0["Code"]?.stringValue ?? "None" }
                if reasons.contains(where: { $0 == "ValidationError" }) {
                    throw KeyValueStoreError(code: .validation, message: "TransactWriteItems on table '\(configuration.tableName)': \(service.message)")
                }
                let failed = reasons.indices.filter { reasons[$0] == "ConditionalCheckFailed" }
                if failed.isEmpty {
                    // Cancelled by a conflicting transaction or throttling: the
                    // caller re-reads and re-plans, as for a failed condition.
                    throw KeyValueStoreError(
                        code: .transactionCanceled,
                        message: "TransactWriteItems on table '\(configuration.tableName)' was cancelled: \(reasons.joined(separator: ", "))",
                        cancellationReasons: reasons.map { $0 == "None" ? .none : .conditionalCheckFailed })
                }
                let updates = failed.compactMap { index -> ItemKey? in
                    if case .update(let key, _, _) = actions[index] { return key }
                    return nil
                }
                if !removedExpired, !updates.isEmpty, try await removeIfExpired(updates) {
                    removedExpired = true
                    continue
                }
                throw KeyValueStoreError(
                    code: .transactionCanceled,
                    message: "TransactWriteItems on table '\(configuration.tableName)': \(service.message)",
                    cancellationReasons: reasons.indices.map { failed.contains($0) ? .conditionalCheckFailed : .none })
            }
        }
    }

    /// One element of `TransactItems`, with its own placeholders.
    private func transactItem(_ action: WriteAction, now: Int64) throws(KeyValueStoreError) -> JSONValue {
        var expressions = Expressions(timeToLive: timeToLive, now: now)
        var member: [String: JSONValue] = ["TableName": table]
        let condition = try action.condition.flatMap { c throws(KeyValueStoreError) in try expressions.condition(c) }
        switch action {
        case .put(let item, _):
            member["Item"] = try layout.item(item)
            if let condition { member["ConditionExpression"] = .string(condition) }
            expressions.members(into: &member)
            return .object(["Put": .object(member)])
        case .delete(let key, _):
            member["Key"] = try layout.key(key)
            if let condition { member["ConditionExpression"] = .string(condition) }
            expressions.members(into: &member)
            return .object(["Delete": .object(member)])
        case .update(let key, let update, _):
            member["Key"] = try layout.key(key)
            if let text = try expressions.update(update, key: key) {
                member["UpdateExpression"] = .string(text)
            } else {
                // A transaction's update needs an expression: removing an
                // attribute no item has changes nothing (and creates the
                // item when absent, as an empty update does).
                member["UpdateExpression"] = .string("REMOVE \(expressions.name(Self.unusedAttribute))")
            }
            if let guarded = Expressions.all([condition, expressions.notExpired()]) { member["ConditionExpression"] = .string(guarded) }
            expressions.members(into: &member)
            return .object(["Update": .object(member)])
        case .conditionCheck(let key, _):
            member["Key"] = try layout.key(key)
            member["ConditionExpression"] = .string(condition ?? "(\(expressions.live()) OR \(expressions.absent()))")
            expressions.members(into: &member)
            return .object(["ConditionCheck": .object(member)])
        }
    }

    /// A random 32-character hexadecimal idempotency token.
    static func requestToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<2).map { _ in
            let digits = String(generator.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - digits.count) + digits
        }.joined()
    }

    public func batchWriteItems(_ requests: [BatchWriteRequest]) async throws(KeyValueStoreError) {
        // DynamoDB rejects one key twice in a request; the last request for
        // a key is the one that would stand, so it is the one sent.
        var last: [ItemKey: Int] = [:]
        for (index, request) in requests.enumerated() {
            try TableLayout.validate(request.key)
            last[request.key] = index
        }
        let effective = requests.indices.filter { last[requests[$0].key] == $0 }.map { requests[$0] }
        for start in stride(from: 0, to: effective.count, by: Self.maxBatchWriteRequests) {
            var pending: [JSONValue] = []
            for request in effective[start..<min(start + Self.maxBatchWriteRequests, effective.count)] {
                switch request {
                case .put(let item): pending.append(.object(["PutRequest": .object(["Item": try layout.item(item)])]))
                case .delete(let key): pending.append(.object(["DeleteRequest": .object(["Key": try layout.key(key)])]))
                }
            }
            var round = 0
            while !pending.isEmpty {
                if round > 0 { try await pause(round: round, what: "BatchWriteItem") }
                round += 1
                let response = try await call("BatchWriteItem", ["RequestItems": .object([configuration.tableName: .array(pending)])])
                pending = response["UnprocessedItems"]?[configuration.tableName]?.arrayValue ?? []
            }
        }
    }

    // MARK: Expiry

    /// Expired items found by scanning the table, longest expired first
    /// among those found. The scan goes on from where the previous call
    /// stopped (one position per store value and its copies), so
    /// successive calls read each page of the table once per pass; a pass
    /// costs 0.5 read units per 4 KiB stored (see docs/SCALING.md).
    public func expiredItems(limit: Int) async throws(KeyValueStoreError) -> [Item] {
        guard let timeToLive, limit > 0 else { return [] }
        let now = now()
        var found: [Item] = []
        var start = scanPosition.withLock { $0 }
        repeat {
            var expressions = Expressions(timeToLive: timeToLive, now: now)
            var request: [String: JSONValue] = ["TableName": table, "FilterExpression": .string(expressions.expired())]
            expressions.members(into: &request)
            if let start { request["ExclusiveStartKey"] = start }
            let response = try await call("Scan", request)
            for value in response["Items"]?.arrayValue ?? [] {
                if let item = try layout.item(value) { found.append(item) }
            }
            start = response["LastEvaluatedKey"]
        } while start != nil && found.count < limit
        scanPosition.withLock { [start] in $0 = start }
        let ordered = found.map { (timeToLive.expiry(of: $0.attributes) ?? now, $0) }.sorted { ($0.0, $0.1.key) < ($1.0, $1.1.key) }
        return ordered.prefix(limit).map(\.1)
    }
}

/// A scan position shared by a store's copies.
final class SharedScanPosition: Sendable {
    private let position: Mutex<JSONValue?>

    init(_ position: JSONValue?) { self.position = Mutex(position) }

    func withLock<T>(_ body: (inout JSONValue?) -> T) -> T { position.withLock { body(&$0) } }
}
