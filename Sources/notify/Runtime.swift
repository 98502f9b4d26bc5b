import ArgumentParser
import Delivery
import DynamoDBStore
import Foundation
import Gateway
import KeyValueStore
import Logging
import Metrics
import NATS
import Notifications
import Prometheus
import SQLiteStore
import Templates
import ServiceLifecycle
import UnixSignals

/// What a command connects to and opens before its services start, closed
/// in reverse order after they stop.
struct Runtime {
    let common: CommonSettings
    let connection: NATSConnection
    /// The SQLite file, closed last; `nil` on DynamoDB.
    let database: SQLiteDatabase?
    let repository: NotificationRepository
    let metrics: PrometheusCollectorRegistry
    let logger: Logger

    /// - Parameters:
    ///   - delivery: templates for the records' `title` and `body` and,
    ///     with a channel on, where new notifications are announced.
    ///   - templates: the templates when there are no delivery settings
    ///     (the gateway renders titles again when an actor's name changed).
    static func start(
        common: CommonSettings, store settings: StoreSettings, delivery: DeliverySettings?, templates: NotificationTemplates?,
        metrics: PrometheusCollectorRegistry, logger: Logger
    ) async -> Runtime {
        let connection = await common.connect()
        let events = connection.events
        Task.detached {
            for await event in events {
                switch event {
                case .disconnected: logger.warning("NATS disconnected; reconnecting")
                case .reconnected(let url): logger.info("NATS reconnected", metadata: ["url": .string(url)])
                case .closed: logger.info("NATS connection closed")
                case .error(let text): logger.error("NATS error", metadata: ["error": .string(text)])
                }
            }
        }
        let (store, database) = await openStore(settings, logger: logger)
        var subjects = common.subjects
        subjects.dispatch = delivery?.dispatchSubject
        let repository = NotificationRepository(
            store: store, subjects: subjects, retention: settings.retention,
            readRetention: settings.readRetention, aggregateWindow: settings.aggregateWindow, texts: delivery?.templates ?? templates,
            enrichment: settings.enrichment, pictures: settings.pictures)
        return Runtime(common: common, connection: connection, database: database, repository: repository, metrics: metrics, logger: logger)
    }

    /// The store `settings` name, ready for use, and the SQLite file behind
    /// it, if any; on failure the process ends with a one-line error.
    static func openStore(_ settings: StoreSettings, logger: Logger) async -> (any KeyValueStore, SQLiteDatabase?) {
        switch settings.backend {
        case .sqlite:
            let (store, database) = await openSQLite(settings)
            logger.info("store opened", metadata: ["store": "sqlite", "path": .string(settings.databasePath), "table": .string(settings.tableName)])
            return (store, database)
        case .dynamodb(let configuration):
            do {
                let store = try DynamoDBKeyValueStore(configuration: configuration, logger: logger)
                try await store.checkTable()
                logger.info("store opened", metadata: [
                    "store": "dynamodb", "endpoint": .string(configuration.endpoint), "region": .string(configuration.region),
                    "table": .string(configuration.tableName),
                ])
                return (store, nil)
            } catch {
                fail("cannot open the store (\(settings.location)): \(error.message)", code: exitUnavailable)
            }
        }
    }

    /// The SQLite store in `DATA_DIR` (the directory, file and table made
    /// when missing); on failure the process ends with a one-line error.
    static func openSQLite(_ settings: StoreSettings) async -> (SQLiteKeyValueStore, SQLiteDatabase) {
        do {
            try FileManager.default.createDirectory(atPath: settings.dataDirectory, withIntermediateDirectories: true)
        } catch {
            fail("DATA_DIR '\(settings.dataDirectory)' cannot be created: \(error.localizedDescription)", code: exitUnavailable)
        }
        guard FileManager.default.isWritableFile(atPath: settings.dataDirectory) else {
            fail("DATA_DIR '\(settings.dataDirectory)' is not writable", code: exitUnavailable)
        }
        do throws(KeyValueStoreError) {
            let database = try await SQLiteDatabase.open(.init(path: settings.databasePath, synchronous: settings.synchronous))
            do {
                return (try await SQLiteKeyValueStore(database: database, tableName: settings.tableName), database)
            } catch {
                await database.close()
                throw error
            }
        } catch {
            fail("cannot open the store: \(error.message)", code: exitUnavailable)
        }
    }

    /// The worker's services: the TTL sweeper (unless turned off) and the worker.
    func worker(_ settings: WorkerSettings, store: StoreSettings, delivery: DeliverySettings) async throws -> [any Service] {
        let worker: NotificationWorker
        do {
            if !delivery.channels.isEmpty {
                // Before the first announcement, so the stream records it.
                try await Dispatcher.ensureStream(delivery.configuration, connection: connection)
            }
            worker = try await NotificationWorker.prepare(
                configuration: settings.worker, connection: connection, repository: repository, logger: logger)
        } catch {
            await close()
            fail("cannot start the worker: \(error)", code: exitUnavailable)
        }
        guard let interval = store.sweepInterval else { return [worker] }
        return [ExpirySweeper(repository: repository, interval: interval, logger: logger), worker]
    }

    /// The dispatcher, sending on the channels that are on; none when no
    /// channel is.
    func dispatcher(_ settings: DeliverySettings) async -> [any Service] {
        guard !settings.channels.isEmpty else { return [] }
        do {
            return [try await Dispatcher.prepare(
                configuration: settings.configuration, connection: connection, repository: repository, senders: settings.senders(repository: repository, logger: logger),
                logger: logger)]
        } catch {
            await close()
            fail("cannot start the dispatcher: \(error)", code: exitUnavailable)
        }
    }

    /// The gateway's services: the HTTP server and its drain.
    func gateway(_ settings: GatewaySettings) throws -> [any Service] {
        let registry = metrics
        let gateway = try Gateway(
            configuration: settings.gateway, connection: connection, repository: repository, logger: logger,
            metricsText: { registry.emitToBuffer() })
        let logger = self.logger
        return gateway.services { port in
            logger.info("gateway listening", metadata: ["port": .stringConvertible(port), "nats": .string(connection.connectedURL ?? "-")])
        }
    }

    /// A worker's own `/health` and `/metrics` port, when one is set.
    func operations(_ settings: OperationsSettings, consumer: ConsumerName?) throws -> [any Service] {
        guard let port = settings.port else { return [] }
        let registry = metrics
        let server = try OperationsServer(
            host: settings.host, port: port, connection: connection, repository: repository, consumer: consumer,
            version: notifyVersion, logger: logger, metricsText: { registry.emitToBuffer() })
        let logger = self.logger
        return server.services { port in
            logger.info("health and metrics listening", metadata: ["port": .stringConvertible(port)])
        }
    }

    /// Closes the store, then NATS.
    func close() async {
        await database?.close()
        await connection.close()
    }
}

/// Bootstraps logging and metrics, opens the runtime, runs the services
/// until SIGTERM or SIGINT, and closes everything in reverse order.
enum ServiceRunner {
    static func run(
        common: CommonSettings, store: StoreSettings, delivery: DeliverySettings? = nil, templates: NotificationTemplates? = nil,
        services: (Runtime) async throws -> [any Service]
    ) async throws {
        LogSetup.bootstrap(level: common.logLevel, production: common.production)
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "notify")
        try await withNATSLibrary {
            let runtime = await Runtime.start(common: common, store: store, delivery: delivery, templates: templates, metrics: registry, logger: logger)
            let list = try await services(runtime)
            let group = ServiceGroup(configuration: .init(
                services: list.map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
            do {
                try await group.run()
            } catch {
                logger.error("stopped with an error", metadata: ["error": .string("\(error)")])
                await runtime.close()
                throw ExitCode.failure
            }
            await runtime.close()
        }
    }
}
