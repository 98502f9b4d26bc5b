import ArgumentParser
import Delivery
import DynamoDBStore
import Foundation
import NATS
import Notifications
import SQLiteStore
import Gateway

/// A setting that cannot be used; the message names the variable or flag.
struct SettingsError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// Reads settings from the environment, with command-line values taking
/// precedence, and turns them into typed values with clear errors.
struct SettingsReader {
    let environment: [String: String]

    /// The flag's value, else the variable's, else `nil` (empty counts as unset).
    func raw(_ variable: String, flag: String?) -> String? {
        if let flag, !flag.isEmpty { return flag }
        if let value = environment[variable], !value.trimmingCharacters(in: .whitespaces).isEmpty {
            return value.trimmingCharacters(in: .whitespaces)
        }
        return nil
    }

    func string(_ variable: String, flag: String? = nil, default fallback: String) -> String {
        raw(variable, flag: flag) ?? fallback
    }

    func integer(_ variable: String, flag: Int? = nil, default fallback: Int, range: ClosedRange<Int>) throws -> Int {
        let value: Int
        if let flag {
            value = flag
        } else if let text = raw(variable, flag: nil) {
            guard let parsed = Int(text) else { throw SettingsError(message: "\(variable)='\(text)' is not a whole number") }
            value = parsed
        } else {
            value = fallback
        }
        guard range.contains(value) else {
            throw SettingsError(message: "\(variable)=\(value) is out of range (\(range.lowerBound)–\(range.upperBound))")
        }
        return value
    }

    func bool(_ variable: String, flag: Bool? = nil, default fallback: Bool) throws -> Bool {
        if let flag { return flag }
        guard let text = raw(variable, flag: nil) else { return fallback }
        switch text.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw SettingsError(message: "\(variable)='\(text)' is not a boolean (use true or false)")
        }
    }

    func duration(_ variable: String, flag: String? = nil, default fallback: Duration?, allowZero: Bool = false) throws -> Duration? {
        guard let text = raw(variable, flag: flag) else { return fallback }
        guard let value = Self.parseDuration(text) else {
            throw SettingsError(message: "\(variable)='\(text)' is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)")
        }
        if value == .zero {
            guard allowZero else { throw SettingsError(message: "\(variable) must be greater than zero") }
            return nil
        }
        return value
    }

    func durations(_ variable: String, flag: String? = nil) throws -> [Duration] {
        guard let text = raw(variable, flag: flag) else { return [] }
        return try text.split(separator: ",").map { part in
            let item = part.trimmingCharacters(in: .whitespaces)
            guard let value = Self.parseDuration(item), value > .zero else {
                throw SettingsError(message: "\(variable): '\(item)' is not a positive duration (use e.g. 1s,5s,30s)")
            }
            return value
        }
    }

    func choice<T: RawRepresentable & CaseIterable>(_ variable: String, flag: String? = nil, default fallback: T) throws -> T where T.RawValue == String {
        guard let text = raw(variable, flag: flag) else { return fallback }
        guard let value = T(rawValue: text.lowercased()) else {
            throw SettingsError(message: "\(variable)='\(text)' must be one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return value
    }

    /// `500ms`, `30s`, `5m`, `2h`, `7d`, or plain seconds.
    static func parseDuration(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            if suffix == "s", number.hasSuffix("m") { continue }
            guard let value = Double(number), value >= 0, value.isFinite else { return nil }
            return .milliseconds(Int64((value * scale * 1000).rounded()))
        }
        guard let seconds = Double(text), seconds >= 0, seconds.isFinite else { return nil }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}

/// Settings every command shares.
struct CommonSettings {
    var natsURLs: [String]
    var natsCredentialsFile: String?
    var subject: String
    var userSubjectPrefix: String
    var roomSubjectPrefix: String
    /// Where workers announce profile and resource changes to gateways.
    var profileSubjectPrefix: String
    var resourceSubjectPrefix: String
    var logLevel: String
    /// Where the worker publishes changes and the gateway listens.
    var subjects: OutboundSubjects {
        OutboundSubjects(users: userSubjectPrefix, rooms: roomSubjectPrefix, profiles: profileSubjectPrefix, resources: resourceSubjectPrefix)
    }
    var production: Bool

    init(_ reader: SettingsReader, flags: CommonOptions) throws {
        let urls = reader.string("NATS_URL", flag: flags.natsURL, default: "nats://127.0.0.1:4222")
        natsURLs = urls.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !natsURLs.isEmpty else { throw SettingsError(message: "NATS_URL is empty") }
        for url in natsURLs {
            guard let components = URLComponents(string: url.contains("://") ? url : "nats://" + url),
                  let scheme = components.scheme, ["nats", "tls", "ws", "wss"].contains(scheme.lowercased()),
                  let host = components.host, !host.isEmpty
            else { throw SettingsError(message: "NATS_URL: '\(url)' is not a NATS URL (e.g. nats://127.0.0.1:4222)") }
        }
        natsCredentialsFile = reader.raw("NATS_CREDS_FILE", flag: flags.natsCredentialsFile)
        if let file = natsCredentialsFile, !FileManager.default.isReadableFile(atPath: file) {
            throw SettingsError(message: "NATS_CREDS_FILE: cannot read '\(file)'")
        }
        subject = reader.string("NATS_SUBJECT", flag: flags.subject, default: "notifications.>")
        guard Self.isValidSubject(subject, wildcards: true) else {
            throw SettingsError(message: "NATS_SUBJECT: '\(subject)' is not a valid NATS subject")
        }
        userSubjectPrefix = reader.string("USER_SUBJECT_PREFIX", flag: flags.userSubjectPrefix, default: "users")
        guard Self.isValidSubject(userSubjectPrefix, wildcards: false) else {
            throw SettingsError(message: "USER_SUBJECT_PREFIX: '\(userSubjectPrefix)' is not a valid subject prefix (no wildcards or spaces)")
        }
        roomSubjectPrefix = reader.string("ROOM_SUBJECT_PREFIX", flag: flags.roomSubjectPrefix, default: "rooms")
        guard Self.isValidSubject(roomSubjectPrefix, wildcards: false) else {
            throw SettingsError(message: "ROOM_SUBJECT_PREFIX: '\(roomSubjectPrefix)' is not a valid subject prefix (no wildcards or spaces)")
        }
        guard roomSubjectPrefix != userSubjectPrefix else {
            throw SettingsError(message: "ROOM_SUBJECT_PREFIX must differ from USER_SUBJECT_PREFIX ('\(userSubjectPrefix)'): a room named global would look like a user")
        }
        profileSubjectPrefix = reader.string("PROFILE_SUBJECT_PREFIX", default: "profiles")
        resourceSubjectPrefix = reader.string("RESOURCE_SUBJECT_PREFIX", default: "resources")
        for (name, value) in [("PROFILE_SUBJECT_PREFIX", profileSubjectPrefix), ("RESOURCE_SUBJECT_PREFIX", resourceSubjectPrefix)] {
            guard Self.isValidSubject(value, wildcards: false) else {
                throw SettingsError(message: "\(name): '\(value)' is not a valid subject prefix (no wildcards or spaces)")
            }
            guard value != userSubjectPrefix, value != roomSubjectPrefix else {
                throw SettingsError(message: "\(name) must differ from USER_SUBJECT_PREFIX and ROOM_SUBJECT_PREFIX ('\(value)'): gateways tell the messages apart by subject")
            }
        }
        guard profileSubjectPrefix != resourceSubjectPrefix else {
            throw SettingsError(message: "PROFILE_SUBJECT_PREFIX and RESOURCE_SUBJECT_PREFIX must differ")
        }
        logLevel = reader.string("LOG_LEVEL", flag: flags.logLevel, default: "info").lowercased()
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(logLevel) else {
            throw SettingsError(message: "LOG_LEVEL: '\(logLevel)' must be one of trace, debug, info, warning, error")
        }
        let environment = reader.string("ENVIRONMENT", flag: flags.environment, default: "development").lowercased()
        guard ["development", "production"].contains(environment) else {
            throw SettingsError(message: "ENVIRONMENT: '\(environment)' must be development or production")
        }
        production = environment == "production"
    }

    /// Dot-separated non-empty tokens without spaces; `*` and a final `>`
    /// only when `wildcards`.
    static func isValidSubject(_ subject: String, wildcards: Bool) -> Bool {
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        guard !tokens.isEmpty else { return false }
        for (index, token) in tokens.enumerated() {
            guard !token.isEmpty, !token.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 } == true }) else { return false }
            if token == "*" || token == ">" {
                guard wildcards, token == "*" || index == tokens.count - 1 else { return false }
            } else if token.contains("*") || token.contains(">") {
                return false
            }
        }
        return true
    }

    var natsOptions: NATSConnectionOptions {
        NATSConnectionOptions(urls: natsURLs, name: "notify", credentialsFile: natsCredentialsFile)
    }

    /// The settings from the environment and `flags`; a bad one ends the
    /// process with a one-line error.
    static func load(_ flags: CommonOptions) -> CommonSettings {
        do {
            return try CommonSettings(SettingsReader(environment: ProcessInfo.processInfo.environment), flags: flags)
        } catch {
            fail("\(error)", code: exitBadSetting)
        }
    }

    /// A connection to NATS; when none answers, the process ends with a
    /// one-line error naming `NATS_URL`.
    func connect() async -> NATSConnection {
        do {
            return try await NATSConnection.connect(natsOptions)
        } catch {
            fail("cannot reach NATS at \(natsURLs.joined(separator: ",")) (NATS_URL): \(error.statusText)", code: exitUnavailable)
        }
    }
}

/// The values of `STORE`.
enum StoreKind: String, CaseIterable {
    case sqlite, dynamodb
}

/// Which store holds the notifications.
enum StoreBackend {
    /// One SQLite file in `DATA_DIR`: one machine.
    case sqlite
    /// Amazon DynamoDB (or a compatible server): any number of workers and
    /// gateways on any machines.
    case dynamodb(DynamoDBConfiguration)
}

/// Settings of the store.
struct StoreSettings {
    var backend: StoreBackend
    var dataDirectory: String
    var tableName: String
    var synchronous: SQLiteDatabase.Synchronous
    /// How long notifications are kept; `nil` until retracted.
    var retention: Duration?
    /// How long a read notification is kept after it was read (at most
    /// ``retention``); `nil`: as long as an unread one.
    var readRetention: Duration?
    /// How long likes and follows on one resource fold into one
    /// notification; `nil`: no aggregation.
    var aggregateWindow: Duration?
    /// How often the worker deletes expired items and corrects the unread
    /// counters; `nil`: never (DynamoDB's own TTL still deletes them).
    var sweepInterval: Duration?
    /// Actor profiles and resource previews kept and shown current.
    var enrichment: Bool
    /// `CDN_BASE_URL`: picture paths become URLs under it.
    var pictures: PictureURLs

    init(_ reader: SettingsReader, flags: StoreOptions) throws {
        let kind: StoreKind = try reader.choice("STORE", flag: flags.store, default: .sqlite)
        dataDirectory = reader.string("DATA_DIR", flag: flags.dataDirectory, default: "./data")
        tableName = reader.string("NOTIF_TABLE_NAME", flag: flags.tableName, default: "notifications")
        let validName = tableName.utf8.count >= 3 && tableName.utf8.count <= 255
            && tableName.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }
        guard validName else {
            throw SettingsError(message: "NOTIF_TABLE_NAME: '\(tableName)' must be 3–255 characters of A–Z, a–z, 0–9, '_', '.', '-'")
        }
        synchronous = try reader.choice("SQLITE_SYNCHRONOUS", flag: flags.synchronous, default: .full)
        let days = try reader.integer("NOTIF_TTL_DAYS", flag: flags.retentionDays, default: 90, range: 0...36_500)
        retention = days == 0 ? nil : .seconds(days * 86_400)
        if flags.readRetentionDays != nil || reader.raw("READ_TTL_DAYS", flag: nil) != nil {
            let readDays = try reader.integer("READ_TTL_DAYS", flag: flags.readRetentionDays, default: 0, range: 1...36_500)
            if let retention, .seconds(readDays * 86_400) > retention {
                throw SettingsError(message: "READ_TTL_DAYS=\(readDays) is longer than NOTIF_TTL_DAYS=\(days): a read notification cannot outlive an unread one")
            }
            readRetention = .seconds(readDays * 86_400)
        }
        aggregateWindow = try reader.duration("AGGREGATE_WINDOW", flag: flags.aggregateWindow, default: .seconds(3_600), allowZero: true)
        enrichment = try reader.bool("ENRICHMENT", flag: flags.enrichment, default: true)
        let cdn = reader.raw("CDN_BASE_URL", flag: flags.cdnBaseURL)
        if let cdn {
            guard let url = URLComponents(string: cdn), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), let host = url.host,
                  !host.isEmpty, url.query == nil, url.fragment == nil else {
                throw SettingsError(message: "CDN_BASE_URL='\(cdn)' must be an http(s) URL without query or fragment, such as https://cdn.example.com (picture paths are appended to it)")
            }
        }
        pictures = PictureURLs(base: cdn)
        backend = kind == .sqlite ? .sqlite : .dynamodb(try Self.dynamoDB(reader, flags: flags, tableName: tableName))
        // A sweep on DynamoDB scans the table: hourly by default.
        sweepInterval = try reader.duration(
            "EXPIRY_SWEEP_INTERVAL", default: kind == .sqlite ? .seconds(60) : .seconds(3_600), allowZero: true)
    }

    /// DynamoDB's endpoint, region and credentials from `DYNAMODB_ENDPOINT`,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`) and the `AWS_*` key variables.
    private static func dynamoDB(_ reader: SettingsReader, flags: StoreOptions, tableName: String) throws -> DynamoDBConfiguration {
        let endpoint = reader.raw("DYNAMODB_ENDPOINT", flag: flags.dynamoDBEndpoint)
        if let endpoint, DynamoDBConfiguration.host(of: endpoint) == nil {
            throw SettingsError(message: "DYNAMODB_ENDPOINT='\(endpoint)' must be an http:// or https:// URL, such as http://127.0.0.1:8000")
        }
        // A local emulator ignores the region; AWS needs one.
        guard let region = reader.raw("AWS_REGION", flag: nil) ?? reader.raw("AWS_DEFAULT_REGION", flag: nil) ?? (endpoint == nil ? nil : "us-east-1") else {
            throw SettingsError(message: "STORE=dynamodb needs AWS_REGION (such as eu-west-1), or DYNAMODB_ENDPOINT for a local emulator")
        }
        guard let credentials = AWSCredentials.fromEnvironment(reader.environment) else {
            throw SettingsError(message: "STORE=dynamodb needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials); any non-empty values for a local emulator")
        }
        return DynamoDBConfiguration(endpoint: endpoint, region: region, credentials: credentials, tableName: tableName)
    }

    var databasePath: String { dataDirectory + "/notify.sqlite" }

    /// Where the store is, for logs and messages.
    var location: String {
        switch backend {
        case .sqlite: "\(databasePath), table \(tableName)"
        case .dynamodb(let configuration): "DynamoDB table \(tableName) at \(configuration.endpoint)"
        }
    }
}

/// Settings of the worker.
struct WorkerSettings {
    var worker: WorkerConfiguration

    init(_ reader: SettingsReader, common: CommonSettings, flags: WorkerOptions) throws {
        let useJetStream = try reader.bool("NATS_JETSTREAM", flag: flags.jetStream, default: true)
        let streamName = reader.string("NATS_STREAM", flag: flags.streamName, default: "NOTIFICATIONS")
        let consumerName = reader.string("NATS_CONSUMER", flag: flags.consumerName, default: "notification-worker")
        for (variable, name) in [("NATS_STREAM", streamName), ("NATS_CONSUMER", consumerName)] {
            guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_-".contains($0)) }) else {
                throw SettingsError(message: "\(variable): '\(name)' may only contain A–Z, a–z, 0–9, '_' and '-'")
            }
        }
        let storage: StreamStorageSetting = try reader.choice("NATS_STREAM_STORAGE", flag: flags.streamStorage, default: .file)
        let maxAge = try reader.duration("NATS_STREAM_MAX_AGE", flag: flags.streamMaxAge, default: .seconds(7 * 86_400), allowZero: true)
        let replicas = try reader.integer("NATS_STREAM_REPLICAS", flag: flags.streamReplicas, default: 1, range: 1...5)
        let ackWait = try reader.duration("NATS_ACK_WAIT", flag: flags.ackWait, default: .seconds(30))!
        let maxDeliver = try reader.integer("NATS_MAX_DELIVER", flag: flags.maxDeliver, default: 5, range: 1...1_000)
        let backoff = try reader.durations("NATS_BACKOFF", flag: flags.backoff)
        if !backoff.isEmpty, backoff.count >= maxDeliver {
            throw SettingsError(message: "NATS_BACKOFF has \(backoff.count) delays; NATS_MAX_DELIVER (\(maxDeliver)) must be larger")
        }
        let batchSize = try reader.integer("WORKER_BATCH_SIZE", flag: flags.batchSize, default: 1_024, range: 1...8_192)
        var crashPoint: WorkerConfiguration.CrashPoint?
        if let text = reader.raw("NOTIFY_TEST_CRASH_POINT", flag: nil) {
            guard let point = WorkerConfiguration.CrashPoint(rawValue: text) else {
                throw SettingsError(message: "NOTIFY_TEST_CRASH_POINT='\(text)' must be after-commit or after-publish")
            }
            crashPoint = point
        }
        worker = WorkerConfiguration(
            subject: common.subject, userSubjectPrefix: common.userSubjectPrefix, useJetStream: useJetStream,
            streamName: streamName, streamStorage: storage.storage, streamMaxAge: maxAge, streamReplicas: replicas, consumerName: consumerName,
            ackWait: ackWait, maxDeliver: maxDeliver, backoff: backoff, batchSize: batchSize, crashPoint: crashPoint)
        let owner = try Self.rate(reader, "THROTTLE_OWNER", perMinute: flags.throttleOwnerPerMinute, burst: flags.throttleOwnerBurst)
        let actor = try Self.rate(reader, "THROTTLE_ACTOR", perMinute: flags.throttleActorPerMinute, burst: flags.throttleActorBurst)
        if owner != nil || actor != nil { worker.throttle = ThrottleLimits(owner: owner, triggerUser: actor) }
    }

    /// `<prefix>_PER_MINUTE` (0: no limit) and `<prefix>_BURST` (default: the rate).
    private static func rate(_ reader: SettingsReader, _ prefix: String, perMinute: Int?, burst: Int?) throws -> ThrottleLimits.Rate? {
        let rate = try reader.integer(prefix + "_PER_MINUTE", flag: perMinute, default: 0, range: 0...1_000_000)
        let burst = try reader.integer(prefix + "_BURST", flag: burst, default: max(rate, 1), range: 1...1_000_000)
        return rate == 0 ? nil : ThrottleLimits.Rate(perMinute: Double(rate), burst: Double(burst))
    }
}

extension GatewaySettings {
    /// The consumer the worker settings in the environment name, if they are valid.
    static func environmentConsumer(_ reader: SettingsReader, common: CommonSettings) -> ConsumerName? {
        guard let flags = try? WorkerOptions.parse([]) else { return nil }
        return (try? WorkerSettings(reader, common: common, flags: flags))?.consumerName
    }
}

extension WorkerSettings {
    /// The JetStream consumer the worker uses; `nil` over core NATS.
    var consumerName: ConsumerName? {
        worker.useJetStream ? ConsumerName(stream: worker.stream.name, name: worker.consumer.durableName) : nil
    }
}

/// Settings of the gateway.
struct GatewaySettings {
    var gateway: GatewayConfiguration

    /// - Parameter consumer: the worker's consumer, for `/health` and `/metrics`.
    init(_ reader: SettingsReader, common: CommonSettings, flags: GatewayOptions, consumer: ConsumerName?) throws {
        guard let secret = reader.raw("JWT_SECRET", flag: nil) else {
            throw SettingsError(message: "JWT_SECRET is required for the gateway: the HS256 secret your main API signs tokens with (at least \(TokenVerifier.minimumSecretBytes) bytes)")
        }
        guard secret.utf8.count >= TokenVerifier.minimumSecretBytes else {
            throw SettingsError(message: "JWT_SECRET is \(secret.utf8.count) bytes; HS256 needs at least \(TokenVerifier.minimumSecretBytes)")
        }
        let port = try reader.integer("PORT", flag: flags.port, default: 8080, range: 0...65_535)
        let host = reader.string("HOST", flag: flags.host, default: "0.0.0.0")
        var origins: [String]?
        if let text = reader.raw("ALLOWED_ORIGINS", flag: flags.allowedOrigins) {
            let list = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if !list.contains("*") {
                for origin in list {
                    guard let url = URLComponents(string: origin), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil, url.path.isEmpty else {
                        throw SettingsError(message: "ALLOWED_ORIGINS: '\(origin)' is not an origin (scheme://host[:port], no path)")
                    }
                }
                origins = list
            }
        } else if common.production {
            throw SettingsError(message: "ALLOWED_ORIGINS is required in production: the origins of your web app, e.g. https://app.example.com")
        }
        let maxConnections = try reader.integer("MAX_CONNECTIONS_PER_USER", flag: flags.maxConnectionsPerUser, default: 20, range: 1...10_000)
        let maxRooms = try reader.integer("MAX_ROOMS_PER_CONNECTION", flag: flags.maxRoomsPerConnection, default: 32, range: 1...1_000)
        gateway = GatewayConfiguration(
            host: host, port: port, jwtSecret: secret,
            jwtIssuer: reader.raw("JWT_ISSUER", flag: flags.jwtIssuer), jwtAudience: reader.raw("JWT_AUDIENCE", flag: flags.jwtAudience),
            allowedOrigins: origins, userSubjectPrefix: common.userSubjectPrefix, roomSubjectPrefix: common.roomSubjectPrefix,
            maxRoomsPerConnection: maxRooms, maxConnectionsPerUser: maxConnections,
            production: common.production, version: notifyVersion,
            consumer: consumer)
        gateway.unsubscribeSecret = reader.raw("UNSUBSCRIBE_SECRET", flag: nil)
        if let key = reader.raw("VAPID_PRIVATE_KEY", flag: nil) {
            do {
                gateway.vapidPublicKey = try VAPIDKey(base64URL: key).publicKey
            } catch {
                throw SettingsError(message: error.description)
            }
        }
    }
}

/// Settings of a worker's own `/health` and `/metrics` port.
struct OperationsSettings {
    var host: String
    /// `nil`: no operations port.
    var port: Int?

    init(_ reader: SettingsReader, flags: OperationsOptions) throws {
        host = reader.string("HOST", default: "0.0.0.0")
        if flags.metricsPort != nil || reader.raw("METRICS_PORT", flag: nil) != nil {
            port = try reader.integer("METRICS_PORT", flag: flags.metricsPort, default: 0, range: 0...65_535)
        }
    }
}

/// Reported by `/health`.
let notifyVersion = "0.1.0"

enum StreamStorageSetting: String, CaseIterable {
    case file, memory
    var storage: StreamConfiguration.Storage { self == .file ? .file : .memory }
}
