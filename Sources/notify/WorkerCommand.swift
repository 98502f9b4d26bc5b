import ArgumentParser
import Foundation
import KeyValueStore
import Logging
import NATS
import Notifications
import SQLiteStore
import ServiceLifecycle
import UnixSignals

/// `notify worker`: consume events, store them, publish per-user messages.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run the worker: NATS events → validated, deduplicated, stored → users.<owner>.notifications.",
        discussion: "Run several to share the work: they share the durable consumer (and, with SQLite, DATA_DIR)."
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var options: WorkerOptions

    func run() async throws {
        let common = CommonSettings.load(common)
        let settings: WorkerSettings
        do {
            settings = try WorkerSettings(SettingsReader(environment: ProcessInfo.processInfo.environment), common: common, flags: options)
        } catch {
            fail("\(error)", code: exitBadSetting)
        }
        LogSetup.bootstrap(level: settings.common.logLevel, production: settings.common.production)
        try await withNATSLibrary { try await Self.run(settings, logger: Logger(label: "notify")) }
    }

    private static func run(_ settings: WorkerSettings, logger: Logger) async throws {
        let runtime = try await Runtime.start(settings, logger: logger)
        let worker: NotificationWorker
        do {
            worker = try await NotificationWorker.prepare(
                configuration: settings.worker, connection: runtime.connection, repository: runtime.repository, logger: logger)
        } catch {
            await runtime.close()
            fail("cannot start the worker: \(error)", code: exitUnavailable)
        }
        let sweeper = ExpirySweeper(store: runtime.store, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: sweeper), .init(service: worker)],
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

/// What a command connects to and opens before its services start, closed
/// in reverse order after they stop.
struct Runtime {
    let connection: NATSConnection
    let database: SQLiteDatabase
    let store: SQLiteKeyValueStore
    let repository: NotificationRepository
    let logger: Logger

    static func start(_ settings: WorkerSettings, logger: Logger) async throws -> Runtime {
        let connection = await settings.common.connect()
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
        do {
            try FileManager.default.createDirectory(atPath: settings.dataDirectory, withIntermediateDirectories: true)
        } catch {
            fail("DATA_DIR '\(settings.dataDirectory)' cannot be created: \(error.localizedDescription)", code: exitUnavailable)
        }
        guard FileManager.default.isWritableFile(atPath: settings.dataDirectory) else {
            fail("DATA_DIR '\(settings.dataDirectory)' is not writable", code: exitUnavailable)
        }
        let database: SQLiteDatabase
        let store: SQLiteKeyValueStore
        do {
            database = try await SQLiteDatabase.open(.init(path: settings.databasePath, synchronous: settings.synchronous))
            store = try await SQLiteKeyValueStore(database: database, tableName: settings.tableName)
        } catch {
            fail("cannot open the store: \(error.message)", code: exitUnavailable)
        }
        logger.info("store opened", metadata: ["path": .string(settings.databasePath), "table": .string(settings.tableName)])
        let repository = NotificationRepository(store: store, userSubjectPrefix: settings.common.userSubjectPrefix)
        return Runtime(connection: connection, database: database, store: store, repository: repository, logger: logger)
    }

    /// Closes the store, then NATS.
    func close() async {
        await database.close()
        await connection.close()
    }
}
