import Foundation
import KeyValueStore
import NATS
import Notifications
import SQLiteStore

/// The store path alone: the benchmark's events validated and applied in
/// batches to the SQLite repository, without NATS. Shows the store's
/// ceiling on this machine. Enrichment is on, as in the worker, unless
/// `ENRICHMENT` in the environment turns it off.
enum StoreBenchmark {
    static func run(_ options: Benchmark.Options, directory: String) async throws -> [String: Any] {
        let synchronous = SQLiteDatabase.Synchronous(rawValue: options.synchronous) ?? .full
        let database = try await SQLiteDatabase.open(.init(path: directory + "/store.sqlite", synchronous: synchronous))
        let store = try await SQLiteKeyValueStore(database: database, tableName: "notifications")
        let enrichment = enrichmentInEnvironment()
        let repository = NotificationRepository(store: store, enrichment: enrichment)
        let validator = EventValidator(subjects: EventSubjects(filter: "notifications.>"))
        var workload = Workload(owners: options.owners, seed: 42)
        let messages = (0..<options.events).map { _ in workload.next() }
        progress("applying \(options.events) events in batches of \(options.batchSize) (synchronous=\(options.synchronous), enrichment \(enrichment ? "on" : "off"))")
        let now = Int64(Date().timeIntervalSince1970)
        let clock = ContinuousClock()
        let started = clock.now
        var applied = 0
        var published: [String] = []
        var validation = Duration.zero
        for chunk in stride(from: 0, to: messages.count, by: options.batchSize) {
            let validating = clock.now
            let batch = messages[chunk..<min(chunk + options.batchSize, messages.count)].enumerated().map { index, message in
                let event = try! validator.validate(subject: message.subject, body: message.payload, now: now).get()
                return IncomingEvent(event: event, idempotencyKey: IncomingEvent.key(for: event, streamCreated: 1, sequence: UInt64(chunk + index)))
            }
            validation += clock.now - validating
            // As the worker does: outboxes published after one batch are
            // deleted in the next batch's transaction.
            let result = try await repository.apply(batch, publishedOutboxes: published)
            published = result.outbox.map { [$0.id] } ?? []
            applied += batch.count
            if applied % 50_000 < options.batchSize {
                progress(String(format: "%d events, %.0f events/s so far", applied, Double(applied) / seconds(clock.now - started)))
            }
        }
        let elapsed = seconds(clock.now - started)
        await database.close()
        let size = (try? FileManager.default.attributesOfItem(atPath: directory + "/store.sqlite")[.size] as? Int) ?? 0
        progress(String(format: "store only: %.0f events/s (validation %.1f%% of the time)", Double(options.events) / elapsed, seconds(validation) / elapsed * 100))
        return [
            "mode": "store-only", "enrichment": enrichment, "events": options.events, "events_per_second": Int(Double(options.events) / elapsed),
            "batch_size": options.batchSize, "sqlite_synchronous": options.synchronous, "database_mib": size / 1_048_576,
        ]
    }
}
