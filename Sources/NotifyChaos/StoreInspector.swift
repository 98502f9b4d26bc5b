import Foundation
import KeyValueStore
import SQLiteStore

/// One notification item as stored.
struct StoredNotification: Sendable {
    let owner: String
    let id: String
    let actionKey: String
    let read: Bool
    let attributes: [String: AttributeValue]
}

/// What the store holds, read as an operator would: the `sqlite3` command
/// for the file's integrity and raw counts, the project's store opened
/// read-only for the items.
struct StoreSnapshot: Sendable {
    /// `PRAGMA integrity_check`'s answer; `nil` for DynamoDB.
    var integrity: String?
    var notifications: [StoredNotification] = []
    /// Action-key pointers or unread counters that disagree with the notifications.
    var inconsistencies: [String] = []

    /// Owner → action keys of the stored notifications.
    var actionKeys: [String: Set<String>] {
        notifications.reduce(into: [:]) { $0[$1.owner, default: []].insert($1.actionKey) }
    }

    /// `owner action_key` pairs stored more than once.
    var duplicates: [String] {
        var counts: [String: Int] = [:]
        for notification in notifications { counts[notification.owner + " " + notification.actionKey, default: 0] += 1 }
        return counts.filter { $0.value > 1 }.map(\.key)
    }
}

enum StoreInspector {
    static let table = "kv_notifications"

    /// Runs `sql` with the `sqlite3` command on the file (read-only unless
    /// `readOnly` is false); its output lines.
    static func sqlite(_ path: String, _ sql: String, readOnly: Bool = true) throws -> [String] {
        let executable = "/usr/bin/sqlite3"
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw ChaosError("\(executable) is missing: apt-get install sqlite3")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = (readOnly ? ["-readonly"] : []) + ["-cmd", ".timeout 10000", path, sql]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ChaosError("sqlite3 \(path) '\(sql)' failed (status \(process.terminationStatus)): \(errorText.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// Outbox rows: committed batches whose per-user messages are not yet published and deleted.
    static func outboxRows(_ path: String) throws -> Int {
        Int(try sqlite(path, "SELECT count(*) FROM \(table) WHERE pk = 'OUTBOX'").first ?? "") ?? -1
    }

    /// Reads every owner's partition.
    static func snapshot(_ path: String) async throws -> StoreSnapshot {
        let integrity = try sqlite(path, "PRAGMA integrity_check").joined(separator: "; ")
        var snapshot = StoreSnapshot(integrity: integrity)
        let partitions = try sqlite(path, "SELECT DISTINCT pk FROM \(table) WHERE pk LIKE 'U#%'")
        let database = try await SQLiteDatabase.open(.init(path: path, readerCount: 1, readOnly: true))
        do {
            let store = try await SQLiteKeyValueStore(database: database, tableName: "notifications")
            for partition in partitions {
                try await read(partition: partition, from: store, into: &snapshot)
            }
        } catch {
            await database.close()
            throw error
        }
        await database.close()
        return snapshot
    }

    /// Reads the partitions of `owners` from any store (DynamoDB: no file to check).
    static func snapshot(_ store: any KeyValueStore, owners: some Sequence<String>) async throws -> StoreSnapshot {
        var snapshot = StoreSnapshot(integrity: nil)
        for owner in owners { try await read(partition: "U#" + owner, from: store, into: &snapshot) }
        return snapshot
    }

    private static func read(partition: String, from store: any KeyValueStore, into snapshot: inout StoreSnapshot) async throws {
        let owner = String(partition.dropFirst(2))
        var items: [Item] = []
        var start: ItemKey?
        repeat {
            let page = try await store.query(Query(partition: partition, limit: 1_000, exclusiveStartKey: start))
            items += page.items
            start = page.lastEvaluatedKey
        } while start != nil
        var notifications: [String: StoredNotification] = [:]
        var pointers: [String: String] = [:]
        /// Pointers of actors in groups (aggregation): action key → group.
        var groupPointers: [String: String] = [:]
        /// Group → its notification, once an actor joined.
        var heads: [String: String] = [:]
        var unreadCounter: Int64 = 0
        for item in items {
            let sort = item.key.sort
            if sort.hasPrefix("N#") {
                let notification = StoredNotification(
                    owner: owner, id: String(sort.dropFirst(2)), actionKey: item["action_key"]?.stringValue ?? "?",
                    read: item["read"]?.boolValue ?? false, attributes: item.attributes)
                notifications[notification.id] = notification
                snapshot.notifications.append(notification)
            } else if sort.hasPrefix("A#") {
                // Without an id it is a tombstone: the stream position of a
                // retraction, not a pointer to a live notification.
                if let id = item["id"]?.stringValue { pointers[String(sort.dropFirst(2))] = id }
                if let group = item["group"]?.stringValue { groupPointers[String(sort.dropFirst(2))] = group }
            } else if sort.hasPrefix("H#") {
                heads[String(sort.dropFirst(2))] = item["id"]?.stringValue
            } else if sort == "C" {
                unreadCounter = item["unread"]?.integerValue ?? 0
            }
        }
        // A group's notification is its own id until an actor joins. An
        // actor's pointer may outlive the group; the shown actor's must not.
        var grouped = Set<String>()
        for (actionKey, group) in groupPointers {
            let id = heads[group] ?? group
            if notifications[id] != nil {
                pointers[actionKey] = id
                grouped.insert(actionKey)
            }
        }
        // A group's notification shows its newest actor's key; the others
        // point to it too.
        for (actionKey, id) in pointers where notifications[id] == nil || (!grouped.contains(actionKey) && notifications[id]?.actionKey != actionKey) {
            snapshot.inconsistencies.append("\(owner): pointer A#\(actionKey) → \(id), which is not a notification with that key")
        }
        for notification in notifications.values where pointers[notification.actionKey] != notification.id {
            snapshot.inconsistencies.append("\(owner): notification \(notification.id) (\(notification.actionKey)) has no pointer to it")
        }
        let unread = notifications.values.filter { !$0.read }.count
        if unreadCounter != unread {
            snapshot.inconsistencies.append("\(owner): unread counter \(unreadCounter), \(unread) unread notifications")
        }
    }
}

extension Checks {
    /// The checks every event scenario ends with: the file's integrity, one
    /// notification per owner and action key with consistent pointers and
    /// counters, and the stored set against what must (and may) exist.
    ///
    /// - Parameters:
    ///   - required: owner → action keys that must be stored.
    ///   - allowed: owner → action keys that may be stored besides (events
    ///     whose publish failed, so they may or may not have reached the
    ///     stream); empty when nothing else may be.
    mutating func checkStore(_ snapshot: StoreSnapshot, required: [String: Set<String>], allowed: [String: Set<String>] = [:]) {
        checkStore(snapshot, expected: Oracle.Expected(required: required), allowed: allowed)
    }

    /// ``checkStore(_:required:allowed:)`` for what the oracle computed:
    /// the keys it leaves to the consumption order are counted, not judged.
    mutating func checkStore(_ snapshot: StoreSnapshot, expected: Oracle.Expected, allowed: [String: Set<String>] = [:]) {
        let required = expected.required
        let excused = expected.ambiguous.values.reduce(0) { $0 + $1.count }
        if let integrity = snapshot.integrity {
            add("SQLite PRAGMA integrity_check is ok", integrity, integrity == "ok")
        }
        let duplicates = snapshot.duplicates
        add("no duplicate rows: one notification per owner and action_key; pointers and unread counters agree",
            "\(snapshot.notifications.count) notifications, \(duplicates.count) duplicated keys\(sample(duplicates)), \(snapshot.inconsistencies.count) inconsistencies\(sample(snapshot.inconsistencies, 2))",
            duplicates.isEmpty && snapshot.inconsistencies.isEmpty)
        let stored = snapshot.actionKeys
        let missing = required.flatMap { owner, keys in keys.subtracting(stored[owner] ?? []).map { "\(owner) \($0)" } }
        let unexpected = stored.flatMap { owner, keys in
            keys.subtracting(required[owner] ?? []).subtracting(allowed[owner] ?? []).subtracting(expected.ambiguous[owner] ?? []).map { "\(owner) \($0)" }
        }
        let requiredCount = required.values.reduce(0) { $0 + $1.count }
        let storedCount = stored.values.reduce(0) { $0 + $1.count }
        add("nothing lost: every notification the acked events leave live (applied in stream order) is stored",
            "\(requiredCount) required, \(storedCount) stored, \(missing.count) missing\(sample(missing))"
                + (excused == 0 ? "" : "; \(excused) action keys left to consumption order (an event_id published twice around another event on its key)"),
            missing.isEmpty)
        add(allowed.isEmpty ? "nothing extra: nothing stored that the acked events do not leave live (a retraction removed it, or it was never sent)"
                            : "nothing extra: nothing stored that was never published",
            "\(unexpected.count) unexpected\(sample(unexpected))", unexpected.isEmpty)
    }

    /// Every stored notification was published at least once as created.
    mutating func checkPublished(_ snapshot: StoreSnapshot, _ tally: UserMessageTally, dropped: Int) {
        let unpublished = snapshot.notifications.filter { tally.created[$0.id] == nil }.map { "\($0.owner)/\($0.id)" }
        add("every stored notification published at least once on users.*.notifications",
            "\(snapshot.notifications.count - unpublished.count)/\(snapshot.notifications.count) published\(sample(unpublished)); \(tally.republished) ids published more than once (at-least-once after a crash); \(tally.created.count) created and \(tally.deleted.count) deleted messages; subscriber dropped \(dropped)",
            unpublished.isEmpty && dropped == 0)
    }

    mutating func checkDrained(_ state: DrainState) {
        add("drains after restart: consumer num_pending 0 and num_ack_pending 0, outbox empty", state.description, state.isDrained)
    }
}
