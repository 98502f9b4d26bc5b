import Foundation
import KeyValueStore
import Logging
import NATS
@testable import Notifications
import SQLiteStore
import Synchronization
import Testing
import TestSupport

/// Collects every message of a subscription in the background.
final class Inbox: Sendable {
    private final class Storage: Sendable {
        let received = Mutex<[NATSMessage]>([])
    }

    private let storage = Storage()
    private let task: Task<Void, Never>
    let subscription: NATSSubscription

    init(_ subscription: NATSSubscription) {
        self.subscription = subscription
        let storage = self.storage
        task = Task {
            while !Task.isCancelled {
                let batch = await subscription.nextBatch(max: 1024)
                if batch.isEmpty { return }
                storage.received.withLock { $0 += batch }
            }
        }
    }

    var messages: [NATSMessage] { storage.received.withLock { $0 } }

    /// Waits until at least `count` messages arrived (or the timeout passed).
    @discardableResult
    func wait(for count: Int, timeout: Duration = .seconds(15)) async -> [NATSMessage] {
        let deadline = ContinuousClock.now + timeout
        while messages.count < count, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return messages
    }

    /// Messages on `subject`.
    func on(_ subject: String) -> [NATSMessage] { messages.filter { $0.subject == subject } }

    func stop() {
        subscription.unsubscribe()
        task.cancel()
    }
}

/// A store that fails every transaction touching one owner's partition
/// while `isFailing()`: the real SQLite store underneath, with a fault
/// injected in front.
struct FaultInjectingStore: KeyValueStore {
    let base: any KeyValueStore
    let poisonedPartition: String
    let code: KeyValueStoreError.Code
    var isFailing: @Sendable () -> Bool = { true }

    func getItem(_ key: ItemKey, consistentRead: Bool) async throws(KeyValueStoreError) -> Item? { try await base.getItem(key, consistentRead: consistentRead) }
    func batchGetItems(_ keys: [ItemKey], consistentRead: Bool) async throws(KeyValueStoreError) -> [ItemKey: Item] { try await base.batchGetItems(keys, consistentRead: consistentRead) }
    func putItem(_ item: Item, condition: Condition?) async throws(KeyValueStoreError) -> Item? { try await base.putItem(item, condition: condition) }
    func deleteItem(_ key: ItemKey, condition: Condition?) async throws(KeyValueStoreError) -> Item? { try await base.deleteItem(key, condition: condition) }
    func updateItem(_ key: ItemKey, _ update: Update, condition: Condition?) async throws(KeyValueStoreError) -> Item { try await base.updateItem(key, update, condition: condition) }
    func query(_ query: Query) async throws(KeyValueStoreError) -> QueryPage { try await base.query(query) }
    func batchWriteItems(_ requests: [BatchWriteRequest]) async throws(KeyValueStoreError) { try await base.batchWriteItems(requests) }
    func expiredItems(limit: Int) async throws(KeyValueStoreError) -> [Item] { try await base.expiredItems(limit: limit) }

    func transactWriteItems(_ actions: [WriteAction]) async throws(KeyValueStoreError) {
        if isFailing(), actions.contains(where: { $0.key.partition == poisonedPartition }) {
            throw KeyValueStoreError(code: code, message: "injected failure for \(poisonedPartition)")
        }
        try await base.transactWriteItems(actions)
    }
}

/// A worker running in this process on its own connection and database
/// handle, like a separate `notify worker`.
struct RunningWorker {
    let task: Task<Void, any Error>
    let connection: NATSConnection
    let opened: OpenedStore
    let repository: NotificationRepository

    func stop() async {
        task.cancel()
        _ = await task.result
        await opened.close()
        await connection.close()
    }
}

/// A nats-server, a data directory, and observers of the per-user and
/// dead-letter subjects.
struct WorkerHarness {
    let server: NATSServer
    let directory: TemporaryDirectory
    let connection: NATSConnection
    let jetStream: JetStream
    let users: Inbox
    let deadLetters: Inbox
    let location: StoreLocation

    static func run(backend: Backend = .sqlite, _ body: (WorkerHarness) async throws -> Void) async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let location = try await StoreLocation.make(backend, directory: directory)
                let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
                let users = Inbox(try connection.subscribe("users.>"))
                let deadLetters = Inbox(try connection.subscribe("dlq.>"))
                try await connection.flush()
                let harness = WorkerHarness(
                    server: server, directory: directory, connection: connection,
                    jetStream: try JetStream(connection: connection), users: users, deadLetters: deadLetters, location: location)
                do {
                    try await body(harness)
                } catch {
                    users.stop()
                    deadLetters.stop()
                    await connection.close()
                    await location.remove()
                    throw error
                }
                users.stop()
                deadLetters.stop()
                await connection.close()
                await location.remove()
            }
        }
    }

    var databasePath: String { directory.file("notify.sqlite") }

    static func configuration(jetStream: Bool = true, maxDeliver: Int = 3) -> WorkerConfiguration {
        WorkerConfiguration(
            useJetStream: jetStream, streamStorage: .memory, ackWait: .seconds(2), maxDeliver: maxDeliver,
            fetchWait: .milliseconds(100), retryDelay: .milliseconds(100), maxRetryDelay: .milliseconds(300))
    }

    /// Starts a worker; `wrap` may put a fault in front of the store.
    func startWorker(
        _ configuration: WorkerConfiguration = WorkerHarness.configuration(),
        wrap: (any KeyValueStore) -> any KeyValueStore = { $0 }
    ) async throws -> RunningWorker {
        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
        let opened = try await location.open()
        let repository = NotificationRepository(store: wrap(opened.store))
        var logger = Logger(label: "test-worker")
        logger.logLevel = .critical
        let worker = try await NotificationWorker.prepare(configuration: configuration, connection: connection, repository: repository, logger: logger)
        let task = Task { try await worker.run() }
        return RunningWorker(task: task, connection: connection, opened: opened, repository: repository)
    }

    /// Opens the store on its own, for checking what was written.
    func withRepository<T>(_ body: (NotificationRepository) async throws -> T) async throws -> T {
        let opened = try await location.open()
        do {
            let result = try await body(NotificationRepository(store: opened.store))
            await opened.close()
            return result
        } catch {
            await opened.close()
            throw error
        }
    }

    @discardableResult
    func publish(_ subject: String, _ body: [UInt8]) async throws -> PublishAck {
        try await jetStream.publish(subject, payload: body)
    }

    @discardableResult
    func publish(_ kind: String, owner: String = "ana", trigger: String = "ben", resource: String = "p1", eventID: String? = nil) async throws -> PublishAck {
        let event = RepositoryTests.event(kind, owner: owner, trigger: trigger, resource: resource, eventID: eventID)
        return try await publish("notifications." + kind, Self.body(of: event))
    }

    static func body(of incoming: IncomingEvent) -> [UInt8] {
        let event = incoming.event
        var fields: [String: String?] = [
            "owner": EventValidatorTests.s(event.owner), "trigger_user": EventValidatorTests.s(event.triggerUser),
            "action": String(event.action), "resource_type": EventValidatorTests.s(event.resourceType),
            "resource_id": EventValidatorTests.s(event.resourceID), "created_at": String(event.createdAt),
        ]
        fields["event_id"] = event.eventID.map(EventValidatorTests.q) ?? .some(nil)
        return EventValidatorTests.body(fields)
    }

    /// The consumer's unacknowledged and undelivered counts.
    func consumerBacklog() async throws -> (pending: UInt64, ackPending: Int64) {
        let info = try #require(try await jetStream.consumerInfo(stream: "NOTIFICATIONS", name: "notification-worker"))
        return (info.numPending, info.numAckPending)
    }

    /// Waits until the consumer has nothing undelivered or unacknowledged.
    func waitUntilDrained(timeout: Duration = .seconds(15)) async throws -> Bool {
        try await eventually(timeout: timeout) {
            let backlog = try await consumerBacklog()
            return backlog.pending == 0 && backlog.ackPending == 0
        }
    }
}

/// The JSON object of a per-user message.
func object(_ message: NATSMessage) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any])
}
