import CSQLite
public import KeyValueStore

/// ``KeyValueStore`` on one table of an ``SQLiteDatabase``.
///
/// Layout: `kv_<table>(pk TEXT, sk TEXT, attrs BLOB, expires_at INTEGER,
/// PRIMARY KEY (pk, sk)) WITHOUT ROWID`, so a partition is a contiguous key
/// range and queries are index range scans. `expires_at` mirrors the TTL
/// attribute; a partial index on it serves the sweeper. Writes run on the
/// writer connection in `BEGIN IMMEDIATE` transactions; reads on readers.
public final class SQLiteKeyValueStore: KeyValueStore {
    /// The table name as configured (`NOTIF_TABLE_NAME`).
    public let tableName: String
    private let database: SQLiteDatabase
    private let timeToLive: TimeToLive?
    private let clock: StoreClock
    private let sql: Statements

    /// Binds the store to `tableName`, creating the table when missing.
    ///
    /// Table names follow DynamoDB's rule: 3–255 characters of
    /// `[A-Za-z0-9_.-]`.
    public init(
        database: SQLiteDatabase,
        tableName: String,
        timeToLive: TimeToLive? = TimeToLive(),
        clock: StoreClock = .system
    ) async throws(KeyValueStoreError) {
        try Self.validate(tableName: tableName)
        self.database = database
        self.tableName = tableName
        self.timeToLive = timeToLive
        self.clock = clock
        let sql = Statements(table: "kv_" + tableName)
        self.sql = sql
        if let writer = database.writer {
            try await writer.run { connection throws(KeyValueStoreError) in
                try mapped { () throws(SQLiteError) in
                    try connection.execute(sql.createTable)
                    let register = try connection.statement(Statements.registerTable)
                    defer { register.reset() }
                    try register.bind(1, tableName)
                    try register.bind(2, StoreClock.system.now())
                    _ = try register.step()
                }
            }
        } else {
            let exists = try await database.readerQueue().run { connection throws(KeyValueStoreError) in
                try mapped { () throws(SQLiteError) in
                    try connection.scalar("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '\(sql.table)'") ?? 0
                }
            }
            if exists == 0 {
                throw KeyValueStoreError(code: .validation, message: "table '\(tableName)' does not exist in \(database.configuration.path) yet; start a worker first")
            }
        }
    }

    static func validate(tableName: String) throws(KeyValueStoreError) {
        let allowed = tableName.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x5F || byte == 0x2E || byte == 0x2D
        }
        guard allowed, (3...255).contains(tableName.utf8.count) else {
            throw KeyValueStoreError(code: .validation, message: "table name '\(tableName)' must be 3–255 characters of A–Z, a–z, 0–9, '_', '.', '-'")
        }
    }

    private static func validate(_ key: ItemKey) throws(KeyValueStoreError) {
        if key.partition.isEmpty { throw KeyValueStoreError(code: .validation, message: "the partition key of \(key) is empty") }
        if key.sort.isEmpty { throw KeyValueStoreError(code: .validation, message: "the sort key of \(key) is empty") }
    }

    // MARK: KeyValueStore

    /// Consistent reads run on the writer connection, whose cache holds
    /// what was just written; others on a reader.
    private func readQueue(consistent: Bool) -> SQLiteQueue {
        consistent ? (database.writer ?? database.readerQueue()) : database.readerQueue()
    }

    public func getItem(_ key: ItemKey, consistentRead: Bool) async throws(KeyValueStoreError) -> Item? {
        try Self.validate(key)
        let (sql, ttl, now) = (sql, timeToLive, clock.now())
        return try await readQueue(consistent: consistentRead).run { connection throws(KeyValueStoreError) in
            try Self.read(key, on: connection, sql: sql, timeToLive: ttl, now: now)
        }
    }

    public func batchGetItems(_ keys: [ItemKey], consistentRead: Bool) async throws(KeyValueStoreError) -> [ItemKey: Item] {
        for key in keys { try Self.validate(key) }
        if keys.isEmpty { return [:] }
        let (sql, ttl, now) = (sql, timeToLive, clock.now())
        return try await readQueue(consistent: consistentRead).run { connection throws(KeyValueStoreError) in
            // One read transaction for all keys: one snapshot, one lock.
            try mapped { () throws(SQLiteError) in try connection.execute("BEGIN") }
            defer { try? connection.execute("COMMIT") }
            var found: [ItemKey: Item] = [:]
            found.reserveCapacity(keys.count)
            for key in keys {
                if let item = try Self.read(key, on: connection, sql: sql, timeToLive: ttl, now: now) {
                    found[key] = item
                }
            }
            return found
        }
    }

    @discardableResult
    public func putItem(_ item: Item, condition: Condition?) async throws(KeyValueStoreError) -> Item? {
        try Self.validate(item.key)
        let (sql, ttl, now) = (sql, timeToLive, clock.now())
        return try await database.writerQueue().run { connection throws(KeyValueStoreError) in
            try Self.transaction(on: connection) { () throws(KeyValueStoreError) -> Item? in
                let stored = try Self.stored(item.key, on: connection, sql: sql, timeToLive: ttl, now: now)
                let old = stored.live
                if let condition, !stored.satisfies(condition) {
                    throw KeyValueStoreError(code: .conditionalCheckFailed, message: "the condition on \(item.key) did not hold")
                }
                try Self.write(EncodedItem(item, timeToLive: ttl), on: connection, sql: sql)
                return old
            }
        }
    }

    @discardableResult
    public func deleteItem(_ key: ItemKey, condition: Condition?) async throws(KeyValueStoreError) -> Item? {
        try Self.validate(key)
        let (sql, ttl, now) = (sql, timeToLive, clock.now())
        return try await database.writerQueue().run { connection throws(KeyValueStoreError) in
            try Self.transaction(on: connection) { () throws(KeyValueStoreError) -> Item? in
                let stored = try Self.stored(key, on: connection, sql: sql, timeToLive: ttl, now: now)
                let old = stored.live
                if let condition, !stored.satisfies(condition) {
                    throw KeyValueStoreError(code: .conditionalCheckFailed, message: "the condition on \(key) did not hold")
                }
                try Self.remove(key, on: connection, sql: sql)
                return old
            }
        }
    }

    @discardableResult
    public func updateItem(_ key: ItemKey, _ update: Update, condition: Condition?) async throws(KeyValueStoreError) -> Item {
        try Self.validate(key)
        let (sql, ttl, now) = (sql, timeToLive, clock.now())
        return try await database.writerQueue().run { connection throws(KeyValueStoreError) in
            try Self.transaction(on: connection) { () throws(KeyValueStoreError) -> Item in
                let stored = try Self.stored(key, on: connection, sql: sql, timeToLive: ttl, now: now)
                let old = stored.live
                if let condition, !stored.satisfies(condition) {
                    throw KeyValueStoreError(code: .conditionalCheckFailed, message: "the condition on \(key) did not hold")
                }
                let new = try update.applied(to: old, key: key)
                try Self.write(EncodedItem(new, timeToLive: ttl), on: connection, sql: sql)
                return new
            }
        }
    }

    public func query(_ query: Query) async throws(KeyValueStoreError) -> QueryPage {
        try query.validate()
        let (table, now) = (sql.table, clock.now())
        let plan = QueryPlan(query: query, table: table, now: timeToLive == nil ? nil : now)
        return try await database.readerQueue().run { connection throws(KeyValueStoreError) in
            try mapped { () throws(SQLiteError) -> QueryPage in
                let statement = try connection.statement(plan.sql)
                defer { statement.reset() }
                for (index, value) in plan.bindings.enumerated() {
                    switch value {
                    case .text(let text): try statement.bind(Int32(index + 1), text)
                    case .integer(let number): try statement.bind(Int32(index + 1), number)
                    }
                }
                var items: [Item] = []
                if let limit = query.limit { items.reserveCapacity(min(limit, 1024)) }
                while try statement.step() {
                    let key = ItemKey(partition: query.partition, sort: statement.text(0))
                    let attributes = try Self.attributes(of: statement, column: 1, key: key)
                    items.append(Item(key: key, attributes: attributes))
                }
                let stoppedAtLimit = query.limit.map { items.count == $0 } ?? false
                return QueryPage(items: items, lastEvaluatedKey: stoppedAtLimit ? items.last?.key : nil)
            }
        }
    }

    public func transactWriteItems(_ actions: [WriteAction]) async throws(KeyValueStoreError) {
        try actions.validateTransaction()
        for action in actions { try Self.validate(action.key) }
        let (sql, ttl, now) = (sql, timeToLive, clock.now())
        // Encode on the caller's thread: the writer thread is the bottleneck.
        let encoded = Self.encode(actions, timeToLive: ttl)
        try await database.writerQueue().run { connection throws(KeyValueStoreError) in
            try Self.transaction(on: connection) { () throws(KeyValueStoreError) in
                try Self.execute(actions, encoded: encoded, on: connection, sql: sql, timeToLive: ttl, now: now)
            }
        }
    }

    /// Runs the plan inside one write transaction on the writer: its reads
    /// see the latest writes, and no other writer can change what it read
    /// before its actions are written, so the whole step is one hop to the
    /// writer and one commit.
    public func readAndWrite<Result: Sendable>(
        prefetching keys: [ItemKey],
        _ plan: @escaping @Sendable (ItemReader) throws(KeyValueStoreError) -> PlannedWrite<Result>
    ) async throws(KeyValueStoreError) -> Result {
        for key in keys { try Self.validate(key) }
        let (sql, ttl, now) = (sql, timeToLive, clock.now())
        return try await database.writerQueue().run { connection throws(KeyValueStoreError) in
            try Self.transaction(on: connection) { () throws(KeyValueStoreError) -> Result in
                // The plan reads inside this write transaction, so what it
                // read is still stored when the actions run: their
                // conditions are checked on it without reading again.
                var read: [ItemKey: StoredItem] = [:]
                let reader = ItemReader { keys throws(KeyValueStoreError) in
                    var found: [ItemKey: Item] = [:]
                    found.reserveCapacity(keys.count)
                    read.reserveCapacity(read.count + keys.count)
                    for key in keys {
                        try Self.validate(key)
                        let stored = try Self.stored(key, on: connection, sql: sql, timeToLive: ttl, now: now)
                        read[key] = stored
                        if let item = stored.live { found[key] = item }
                    }
                    return found
                }
                let planned = try plan(reader)
                if !planned.actions.isEmpty {
                    try planned.actions.validateTransaction()
                    for action in planned.actions { try Self.validate(action.key) }
                    let encoded = Self.encode(planned.actions, timeToLive: ttl)
                    try Self.execute(planned.actions, encoded: encoded, read: read, on: connection, sql: sql, timeToLive: ttl, now: now)
                }
                return planned.result
            }
        }
    }

    /// The rows of the transaction's puts, by action index.
    private static func encode(_ actions: [WriteAction], timeToLive: TimeToLive?) -> [EncodedItem?] {
        actions.map { action in
            if case .put(let item, _) = action { return EncodedItem(item, timeToLive: timeToLive) }
            return nil
        }
    }

    /// Checks each action's condition and writes it, inside the caller's
    /// transaction; throws a cancellation (for the caller to roll back)
    /// when any condition fails. `read` holds items read earlier in the
    /// same transaction: their conditions are checked without a lookup.
    private static func execute(
        _ actions: [WriteAction], encoded: [EncodedItem?], read: [ItemKey: StoredItem] = [:], on connection: SQLiteConnection,
        sql: Statements, timeToLive ttl: TimeToLive?, now: Int64
    ) throws(KeyValueStoreError) {
        var reasons = [KeyValueStoreError.CancellationReason](repeating: .none, count: actions.count)
        var failed = false
        func stored(_ key: ItemKey) throws(KeyValueStoreError) -> StoredItem {
            if let known = read[key] { return known }
            return try Self.stored(key, on: connection, sql: sql, timeToLive: ttl, now: now)
        }
        // Actions touch distinct items, so one action's write cannot
        // change another's condition; on any failure all is rolled back.
        for (index, action) in actions.enumerated() {
            let holds: Bool
            switch action {
            case .put(let item, .itemNotExists?) where read.index(forKey: item.key) == nil:
                holds = try insertIfAbsent(encoded[index]!, on: connection, sql: sql, now: now)
            case .put(let item, let condition):
                holds = try condition.map { condition throws(KeyValueStoreError) in try stored(item.key).satisfies(condition) } ?? true
                if holds { try write(encoded[index]!, on: connection, sql: sql) }
            case .delete(let key, let condition):
                holds = try condition.map { condition throws(KeyValueStoreError) in try stored(key).satisfies(condition) } ?? true
                if holds { try remove(key, on: connection, sql: sql) }
            case .update(let key, let update, let condition):
                let stored = try stored(key)
                holds = condition.map(stored.satisfies) ?? true
                if holds {
                    let new = try update.applied(to: stored.live, key: key)
                    try write(EncodedItem(new, timeToLive: ttl), on: connection, sql: sql)
                }
            case .conditionCheck(let key, let condition):
                holds = try stored(key).satisfies(condition)
            }
            if !holds {
                reasons[index] = .conditionalCheckFailed
                failed = true
            }
        }
        if failed {
            throw KeyValueStoreError(code: .transactionCanceled, message: "nothing was written", cancellationReasons: reasons)
        }
    }

    public func batchWriteItems(_ requests: [BatchWriteRequest]) async throws(KeyValueStoreError) {
        for request in requests { try Self.validate(request.key) }
        if requests.isEmpty { return }
        let sql = sql
        let encoded: [EncodedItem?] = requests.map { request in
            if case .put(let item) = request { return EncodedItem(item, timeToLive: timeToLive) }
            return nil
        }
        try await database.writerQueue().run { connection throws(KeyValueStoreError) in
            try Self.transaction(on: connection) { () throws(KeyValueStoreError) in
                for (index, request) in requests.enumerated() {
                    switch request {
                    case .put: try Self.write(encoded[index]!, on: connection, sql: sql)
                    case .delete(let key): try Self.remove(key, on: connection, sql: sql)
                    }
                }
            }
        }
    }

    public func expiredItems(limit: Int) async throws(KeyValueStoreError) -> [Item] {
        guard timeToLive != nil, limit > 0 else { return [] }
        let (sql, now) = (sql, clock.now())
        return try await database.readerQueue().run { connection throws(KeyValueStoreError) in
            try mapped { () throws(SQLiteError) -> [Item] in
                let statement = try connection.statement(sql.expired)
                defer { statement.reset() }
                try statement.bind(1, now)
                try statement.bind(2, Int64(limit))
                var items: [Item] = []
                while try statement.step() {
                    let key = ItemKey(partition: statement.text(0), sort: statement.text(1))
                    items.append(Item(key: key, attributes: try Self.attributes(of: statement, column: 2, key: key)))
                }
                return items
            }
        }
    }

    // MARK: Row operations (run on a connection's queue)

    private static func transaction<T>(
        on connection: SQLiteConnection,
        _ body: () throws(KeyValueStoreError) -> T
    ) throws(KeyValueStoreError) -> T {
        do {
            return try connection.writeTransaction(body)
        } catch {
            switch error {
            case .sqlite(let failure): throw failure.storeError
            case .body(let failure): throw failure
            }
        }
    }

    private static func read(
        _ key: ItemKey, on connection: SQLiteConnection, sql: Statements, timeToLive: TimeToLive?, now: Int64
    ) throws(KeyValueStoreError) -> Item? {
        try stored(key, on: connection, sql: sql, timeToLive: timeToLive, now: now).live
    }

    /// An item as stored, expired or not: what conditions are checked on.
    private struct StoredItem {
        let item: Item?
        let expired: Bool

        /// The item as reads see it.
        var live: Item? { expired ? nil : item }

        func satisfies(_ condition: Condition) -> Bool {
            condition.isSatisfied(by: item, expired: expired)
        }
    }

    private static func stored(
        _ key: ItemKey, on connection: SQLiteConnection, sql: Statements, timeToLive: TimeToLive?, now: Int64
    ) throws(KeyValueStoreError) -> StoredItem {
        try mapped { () throws(SQLiteError) -> StoredItem in
            let statement = try connection.statement(sql.get)
            defer { statement.reset() }
            try statement.bind(1, key.partition)
            try statement.bind(2, key.sort)
            guard try statement.step() else { return StoredItem(item: nil, expired: false) }
            let expired = timeToLive != nil && !statement.isNull(1) && statement.int64(1) <= now
            let attributes = try attributes(of: statement, column: 0, key: key)
            return StoredItem(item: Item(key: key, attributes: attributes), expired: expired)
        }
    }

    private static func attributes(
        of statement: SQLiteStatement, column: Int32, key: ItemKey
    ) throws(SQLiteError) -> [String: AttributeValue] {
        try statement.withBlob(column) { bytes throws(SQLiteError) in
            do throws(KeyValueStoreError) {
                return try AttributeCodec.decode(bytes)
            } catch {
                throw SQLiteError(code: SQLITE_CORRUPT, message: "\(error.message) at \(key)")
            }
        }
    }

    private static func bindRow(_ item: EncodedItem, to statement: SQLiteStatement) throws(SQLiteError) {
        try statement.bind(1, item.key.partition)
        try statement.bind(2, item.key.sort)
        try statement.bind(3, blob: item.attributes)
        try statement.bind(4, item.expiresAt)
    }

    private static func write(_ item: EncodedItem, on connection: SQLiteConnection, sql: Statements) throws(KeyValueStoreError) {
        try mapped { () throws(SQLiteError) in
            let statement = try connection.statement(sql.upsert)
            defer { statement.reset() }
            try bindRow(item, to: statement)
            _ = try statement.step()
        }
    }

    /// Inserts unless a live item exists (an expired one is replaced);
    /// `false` when a live item was there.
    private static func insertIfAbsent(
        _ item: EncodedItem, on connection: SQLiteConnection, sql: Statements, now: Int64
    ) throws(KeyValueStoreError) -> Bool {
        try mapped { () throws(SQLiteError) -> Bool in
            let statement = try connection.statement(sql.insertIfAbsent)
            defer { statement.reset() }
            try bindRow(item, to: statement)
            // Without a TTL nothing is ever expired: no existing row may be replaced.
            try statement.bind(5, item.hasTimeToLive ? now : Int64.min)
            _ = try statement.step()
            return connection.changes == 1
        }
    }

    private static func remove(_ key: ItemKey, on connection: SQLiteConnection, sql: Statements) throws(KeyValueStoreError) {
        try mapped { () throws(SQLiteError) in
            let statement = try connection.statement(sql.delete)
            defer { statement.reset() }
            try statement.bind(1, key.partition)
            try statement.bind(2, key.sort)
            _ = try statement.step()
        }
    }
}

/// An item as its row: key, encoded attributes, expiry column.
struct EncodedItem: Sendable {
    let key: ItemKey
    let attributes: [UInt8]
    let expiresAt: Int64?
    /// Whether the store has a TTL attribute at all.
    let hasTimeToLive: Bool

    init(_ item: Item, timeToLive: TimeToLive?) {
        key = item.key
        attributes = AttributeCodec.encode(item.attributes)
        expiresAt = timeToLive?.expiry(of: item.attributes)
        hasTimeToLive = timeToLive != nil
    }
}

/// The SQL of one table, built once.
struct Statements: Sendable {
    let table: String
    let createTable: String
    let get: String
    let upsert: String
    let insertIfAbsent: String
    let delete: String
    let expired: String

    static let registerTable = "INSERT INTO kv_tables(name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING"

    init(table: String) {
        // The name was validated to [A-Za-z0-9_.-]; quoting makes '.' and '-' legal.
        let quoted = "\"\(table)\""
        self.table = table
        createTable = """
            CREATE TABLE IF NOT EXISTS \(quoted) (
                pk TEXT NOT NULL,
                sk TEXT NOT NULL,
                attrs BLOB NOT NULL,
                expires_at INTEGER,
                PRIMARY KEY (pk, sk)
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS "\(table)_expiry" ON \(quoted)(expires_at) WHERE expires_at IS NOT NULL;
            """
        get = "SELECT attrs, expires_at FROM \(quoted) WHERE pk = ?1 AND sk = ?2"
        upsert = """
            INSERT INTO \(quoted)(pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4)
            ON CONFLICT(pk, sk) DO UPDATE SET attrs = excluded.attrs, expires_at = excluded.expires_at
            """
        insertIfAbsent = """
            INSERT INTO \(quoted)(pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4)
            ON CONFLICT(pk, sk) DO UPDATE SET attrs = excluded.attrs, expires_at = excluded.expires_at
            WHERE \(quoted).expires_at IS NOT NULL AND \(quoted).expires_at <= ?5
            """
        delete = "DELETE FROM \(quoted) WHERE pk = ?1 AND sk = ?2"
        expired = """
            SELECT pk, sk, attrs FROM \(quoted) WHERE expires_at IS NOT NULL AND expires_at <= ?1
            ORDER BY expires_at, pk, sk LIMIT ?2
            """
    }
}

/// The SQL and bindings of one query.
struct QueryPlan: Sendable {
    enum Binding: Sendable {
        case text(String)
        case integer(Int64)
    }

    let sql: String
    let bindings: [Binding]

    /// - Parameter now: the current time when expired items must be skipped.
    init(query: Query, table: String, now: Int64?) {
        var clauses = ["pk = ?"]
        var bindings: [Binding] = [.text(query.partition)]
        func add(_ clause: String, _ value: String) {
            clauses.append(clause)
            bindings.append(.text(value))
        }
        if let now {
            clauses.append("(expires_at IS NULL OR expires_at > ?)")
            bindings.append(.integer(now))
        }
        switch query.sortKey {
        case nil: break
        case .equals(let value): add("sk = ?", value)
        case .beginsWith(let prefix):
            add("sk >= ?", prefix)
            if let upper = prefixUpperBound(prefix) { add("sk < ?", upper) }
        case .between(let low, let high):
            add("sk >= ?", low)
            add("sk <= ?", high)
        case .lessThan(let value): add("sk < ?", value)
        case .lessThanOrEqual(let value): add("sk <= ?", value)
        case .greaterThan(let value): add("sk > ?", value)
        case .greaterThanOrEqual(let value): add("sk >= ?", value)
        }
        if let start = query.exclusiveStartKey {
            add(query.scanForward ? "sk > ?" : "sk < ?", start.sort)
        }
        var sql = "SELECT sk, attrs FROM \"\(table)\" WHERE " + clauses.joined(separator: " AND ")
        sql += query.scanForward ? " ORDER BY sk ASC" : " ORDER BY sk DESC"
        if let limit = query.limit {
            sql += " LIMIT ?"
            bindings.append(.integer(Int64(limit)))
        }
        self.sql = sql
        self.bindings = bindings
    }
}

/// The smallest string greater than every string that starts with `prefix`
/// (in UTF-8 byte order), or `nil` when there is none.
func prefixUpperBound(_ prefix: String) -> String? {
    var scalars = Array(prefix.unicodeScalars)
    while let last = scalars.popLast() {
        var next = last.value + 1
        if next == 0xD800 { next = 0xE000 }  // skip the surrogate range
        if let scalar = Unicode.Scalar(next) {
            scalars.append(scalar)
            var result = String.UnicodeScalarView()
            result.append(contentsOf: scalars)
            return String(result)
        }
    }
    return nil
}
