import ArgumentParser
import Delivery
import DynamoDBStore
import Foundation
import KeyValueStore
import NATS
import Notifications
import SQLiteStore

/// `notify doctor`: checks the configuration and every dependency and says
/// in plain words what is wrong.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check the settings, NATS, JetStream, DATA_DIR and the store; print what is wrong and how to fix it.",
        discussion: "Exits 0 when every check passes, 1 otherwise. Changes nothing: it creates no stream, consumer or file."
    )

    enum Role: String, ExpressibleByArgument, CaseIterable {
        case serve, worker, gateway, dispatcher
        var runsWorker: Bool { self == .serve || self == .worker }
        var runsGateway: Bool { self == .serve || self == .gateway }
        var runsDelivery: Bool { self != .gateway }
    }

    @Option(help: "The command to check the settings of: serve, worker, gateway or dispatcher.")
    var role: Role = .serve

    @OptionGroup var common: CommonOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var workerOptions: WorkerOptions
    @OptionGroup var gatewayOptions: GatewayOptions
    @OptionGroup var deliveryOptions: DeliveryOptions

    func run() async throws {
        var report = DoctorReport()
        let reader = SettingsReader(environment: ProcessInfo.processInfo.environment)
        let common = report.check("settings: NATS and logging") { try CommonSettings(reader, flags: self.common) }
        let storeSettings = report.check("settings: store") { try StoreSettings(reader, flags: store) }
        var workerSettings: WorkerSettings?
        if role.runsWorker, let common {
            workerSettings = report.check("settings: worker") { try WorkerSettings(reader, common: common, flags: workerOptions) }
        }
        if role.runsGateway, let common {
            _ = report.check("settings: gateway (JWT_SECRET, ALLOWED_ORIGINS, PORT)") { try GatewaySettings(reader, common: common, flags: gatewayOptions, consumer: nil) }
        }
        if role.runsDelivery {
            let delivery = report.check("settings: delivery (DELIVERY_CHANNELS, templates, SMTP, VAPID)") {
                try DeliverySettings(reader, flags: deliveryOptions, worker: workerSettings)
            }
            if let email = delivery?.email { await report.checkSMTP(email.client) }
        }
        if let storeSettings {
            switch storeSettings.backend {
            case .sqlite:
                report.checkDataDirectory(storeSettings)
                await report.checkStore(storeSettings)
            case .dynamodb(let configuration):
                await report.checkDynamoDB(configuration, location: storeSettings.location)
            }
        }
        if let common {
            try await withNATSLibrary {
                await report.checkNATS(common, worker: workerSettings?.worker)
            }
        }
        print(report.failures == 0 ? "All checks passed." : "\(report.failures) check(s) failed.")
        if report.failures > 0 { throw ExitCode(exitUnavailable) }
    }
}

/// The doctor's findings, printed as they are made.
struct DoctorReport {
    private(set) var failures = 0

    mutating func pass(_ what: String) {
        print("ok    \(what)")
    }

    mutating func fail(_ what: String, _ why: String) {
        failures += 1
        print("FAIL  \(what): \(why)")
    }

    mutating func note(_ what: String) {
        print("note  \(what)")
    }

    /// Runs `body`; a thrown error is a failure of `what`.
    mutating func check<T>(_ what: String, _ body: () throws -> T) -> T? {
        do {
            let value = try body()
            pass(what)
            return value
        } catch {
            fail(what, "\(error)")
            return nil
        }
    }

    /// DATA_DIR exists (or can be created) and a file can be written in it.
    mutating func checkDataDirectory(_ settings: StoreSettings) {
        let what = "DATA_DIR \(settings.dataDirectory) is writable"
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: settings.dataDirectory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { return fail(what, "it is a file, not a directory; set DATA_DIR to a directory") }
            let probe = settings.dataDirectory + "/.notify-doctor-\(getpid())"
            guard manager.createFile(atPath: probe, contents: Data("ok".utf8)) else {
                return fail(what, "cannot create a file in it (running as uid \(getuid())); fix its owner or permissions, or set DATA_DIR to a writable directory")
            }
            try? manager.removeItem(atPath: probe)
            pass(what)
        } else {
            // Created at start-up: its nearest existing parent must be writable.
            var parent = URL(fileURLWithPath: settings.dataDirectory).deletingLastPathComponent()
            while !manager.fileExists(atPath: parent.path), parent.path != "/" { parent.deleteLastPathComponent() }
            if manager.isWritableFile(atPath: parent.path) {
                pass("DATA_DIR \(settings.dataDirectory) does not exist yet and can be created")
            } else {
                fail(what, "it does not exist and \(parent.path) is not writable (running as uid \(getuid())); create it or set DATA_DIR")
            }
        }
    }

    /// The store file, when present, is ours, readable and not from a newer version.
    mutating func checkStore(_ settings: StoreSettings) async {
        let path = settings.databasePath
        guard FileManager.default.fileExists(atPath: path) else {
            return note("\(path) does not exist yet; the first worker or serve creates it")
        }
        do {
            let database = try await SQLiteDatabase.open(.init(path: path, readOnly: true))
            pass("store \(path) opens")
            do {
                let problems = try await database.quickCheck()
                if problems.isEmpty {
                    pass("store pages are sound (quick_check)")
                } else {
                    fail("store pages are sound (quick_check)", problems.prefix(5).joined(separator: "; ") + "; restore a backup or recover with `sqlite3 \(path) .recover`")
                }
            } catch {
                fail("store pages are sound (quick_check)", error.description)
            }
            await database.close()
        } catch {
            fail("store \(path) opens", error.description)
        }
    }

    /// The DynamoDB table answers and has notify's keys.
    mutating func checkDynamoDB(_ configuration: DynamoDBConfiguration, location: String) async {
        let what = "store: \(location)"
        do {
            try await DynamoDBKeyValueStore(configuration: configuration).checkTable()
            pass(what)
        } catch {
            fail(what, error.message)
        }
    }

    /// NATS answers; JetStream is enabled when the worker needs it; the
    /// stream and consumer, when they exist, and the consumer's backlog.
    mutating func checkNATS(_ common: CommonSettings, worker: WorkerConfiguration?) async {
        let urls = common.natsURLs.joined(separator: ",")
        var options = common.natsOptions
        options.connectTimeout = .seconds(3)
        let connection: NATSConnection
        do {
            connection = try await NATSConnection.connect(options)
        } catch {
            let hint = common.natsCredentialsFile == nil ? "check NATS_URL and that nats-server runs" : "check NATS_URL and NATS_CREDS_FILE"
            return fail("NATS answers at \(urls) (NATS_URL)", "\(error.statusText); \(hint)")
        }
        pass("NATS answers at \(connection.connectedURL ?? urls)")
        if let worker, worker.useJetStream {
            await checkJetStream(connection, worker: worker, urls: urls)
        }
        await connection.close()
    }

    private mutating func checkJetStream(_ connection: NATSConnection, worker: WorkerConfiguration, urls: String) async {
        do {
            let jetStream = try JetStream(connection: connection)
            guard let stream = try await jetStream.streamInfo(worker.stream.name) else {
                pass("JetStream is enabled")
                return note("stream \(worker.stream.name) does not exist yet; the worker creates it on \(worker.stream.subjects.joined(separator: ","))")
            }
            pass("JetStream is enabled; stream \(stream.name) holds \(stream.messages) event(s)")
            if let consumer = try await jetStream.consumerInfo(stream: stream.name, name: worker.consumer.durableName) {
                pass("consumer \(consumer.name): \(consumer.numPending) event(s) waiting, \(consumer.numAckPending) being processed")
            } else {
                note("consumer \(worker.consumer.durableName) does not exist yet; the worker creates it")
            }
        } catch {
            if error.code == .noResponders || error.jetStreamCode == 10076 {
                fail("JetStream is enabled", "the server at \(urls) does not have JetStream; start nats-server with -js (or set NATS_JETSTREAM=false for at-most-once core NATS)")
            } else {
                fail("JetStream answers", error.description)
            }
        }
    }
}

extension DoctorReport {
    /// Connects, greets, starts TLS and logs in as the dispatcher would;
    /// sends nothing.
    mutating func checkSMTP(_ client: SMTPClient) async {
        let server = "\(client.configuration.host):\(client.configuration.port)"
        do {
            try await client.verify()
            let login = client.configuration.username == nil ? "no login" : "login accepted"
            pass("SMTP: \(server) (\(client.configuration.security.rawValue), \(login))")
        } catch {
            fail("SMTP: \(server)", error.description + (error.replyCode == 535 ? " (check the user and password in SMTP_URL)" : ""))
        }
    }
}
