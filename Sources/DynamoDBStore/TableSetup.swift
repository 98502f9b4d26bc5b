public import KeyValueStore
import JSON

/// What ``DynamoDBKeyValueStore/createTable(timeToLive:)`` found and did.
public struct TableSetup: Sendable, Hashable, CustomStringConvertible {
    /// The table was created now (not found).
    public var created: Bool
    /// DynamoDB's TTL was turned on now for the attribute (not on before).
    public var enabledTimeToLive: Bool
    public var tableName: String
    public var timeToLiveAttribute: String?

    public var description: String {
        var parts = [created ? "created table '\(tableName)'" : "table '\(tableName)' already exists"]
        if let attribute = timeToLiveAttribute {
            parts.append(enabledTimeToLive ? "turned on TTL for '\(attribute)'" : "TTL already on for '\(attribute)'")
        }
        return parts.joined(separator: "; ")
    }
}

extension DynamoDBKeyValueStore {
    /// Creates the table (string keys `pk` and `sk`, on-demand capacity)
    /// unless it exists, waits until it is active, and turns on DynamoDB's
    /// TTL for `timeToLive`'s attribute. Safe to run again: it changes
    /// nothing that is already in place, and fails on a table of the same
    /// name with other keys.
    public func createTable(timeToLive: TimeToLive? = TimeToLive(), waitUpTo: Duration = .seconds(120)) async throws(KeyValueStoreError) -> TableSetup {
        let table = JSONValue.string(configuration.tableName)
        var created = true
        do throws(DynamoDBCallError) {
            _ = try await client.call("CreateTable", [
                "TableName": table,
                "AttributeDefinitions": .array([
                    .object(["AttributeName": .string(TableLayout.partitionAttribute), "AttributeType": "S"]),
                    .object(["AttributeName": .string(TableLayout.sortAttribute), "AttributeType": "S"]),
                ]),
                "KeySchema": .array([
                    .object(["AttributeName": .string(TableLayout.partitionAttribute), "KeyType": "HASH"]),
                    .object(["AttributeName": .string(TableLayout.sortAttribute), "KeyType": "RANGE"]),
                ]),
                "BillingMode": "PAY_PER_REQUEST",
            ])
        } catch {
            guard case .service(let service) = error, service.type == "ResourceInUseException" else {
                throw mapped(error, operation: "CreateTable")
            }
            created = false
        }
        try await waitUntilActive(waitUpTo: waitUpTo)

        var enabled = false
        if let timeToLive {
            let described = try await call("DescribeTimeToLive", ["TableName": table])
            let status = described["TimeToLiveDescription"]?["TimeToLiveStatus"]?.stringValue ?? "DISABLED"
            let attribute = described["TimeToLiveDescription"]?["AttributeName"]?.stringValue
            if status == "ENABLED" || status == "ENABLING" {
                guard attribute == timeToLive.attributeName else {
                    throw KeyValueStoreError(
                        code: .incompatible,
                        message: "table '\(configuration.tableName)' has TTL on attribute '\(attribute ?? "?")', notify uses '\(timeToLive.attributeName)'")
                }
            } else {
                _ = try await call("UpdateTimeToLive", [
                    "TableName": table,
                    "TimeToLiveSpecification": .object(["AttributeName": .string(timeToLive.attributeName), "Enabled": .bool(true)]),
                ])
                enabled = true
            }
        }
        return TableSetup(
            created: created, enabledTimeToLive: enabled, tableName: configuration.tableName,
            timeToLiveAttribute: timeToLive?.attributeName)
    }

    /// Deletes the table and everything in it; a missing table is not an
    /// error. For tests and teardown: nothing in notify calls it.
    public func deleteTable() async throws(KeyValueStoreError) {
        do throws(DynamoDBCallError) {
            _ = try await client.call("DeleteTable", ["TableName": .string(configuration.tableName)])
        } catch {
            guard case .service(let service) = error, service.type == "ResourceNotFoundException" else {
                throw mapped(error, operation: "DeleteTable")
            }
        }
    }

    /// Throws unless the table exists with notify's key schema; the message
    /// says how to create it.
    public func checkTable() async throws(KeyValueStoreError) {
        _ = try await describeTable()
    }

    /// `DescribeTable`'s `Table`, after checking its keys.
    private func describeTable() async throws(KeyValueStoreError) -> JSONValue? {
        let table = try await call("DescribeTable", ["TableName": .string(configuration.tableName)])["Table"]
        let schema = table?["KeySchema"]?.arrayValue ?? []
        let keys = Set(schema.compactMap { element -> String? in
            guard let name = element["AttributeName"]?.stringValue, let type = element["KeyType"]?.stringValue else { return nil }
            return name + ":" + type
        })
        let expected: Set = [TableLayout.partitionAttribute + ":HASH", TableLayout.sortAttribute + ":RANGE"]
        guard keys == expected else {
            throw KeyValueStoreError(
                code: .incompatible,
                message: "table '\(configuration.tableName)' has keys \(keys.sorted()); notify needs a string partition key '\(TableLayout.partitionAttribute)' and a string sort key '\(TableLayout.sortAttribute)'")
        }
        return table
    }

    private func waitUntilActive(waitUpTo: Duration) async throws(KeyValueStoreError) {
        let deadline = ContinuousClock.now + waitUpTo
        while true {
            let status = try await describeTable()?["TableStatus"]?.stringValue ?? "UNKNOWN"
            if status == "ACTIVE" { return }
            guard ContinuousClock.now < deadline else {
                throw KeyValueStoreError(
                    code: .unavailable, message: "table '\(configuration.tableName)' is still \(status) after \(waitUpTo)")
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }
}
