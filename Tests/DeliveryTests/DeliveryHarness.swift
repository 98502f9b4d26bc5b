import Delivery
import Foundation
import KeyValueStore
import Logging
import NATS
import Notifications
import ServiceLifecycle
import Templates
import TestSupport

/// A nats-server, a SQLite store, a worker that announces new
/// notifications, and a dispatcher with the given senders: all real.
struct DeliveryHarness: Sendable {
    let server: NATSServer
    let connection: NATSConnection
    let jetStream: JetStream
    let repository: NotificationRepository
    let configuration: DeliveryConfiguration

    static var quietLogger: Logger {
        var logger = Logger(label: "delivery-test")
        logger.logLevel = .critical
        return logger
    }

    /// Test-sized retries: three tries, 100 ms apart at first.
    static let testConfiguration = DeliveryConfiguration(
        storage: .memory, maxAttempts: 3, backoff: .milliseconds(100), maxBackoff: .milliseconds(400), fetchWait: .milliseconds(100))

    static func run(
        senders: [any ChannelSender], configuration: DeliveryConfiguration = testConfiguration, _ body: (DeliveryHarness) async throws -> Void
    ) async throws {
        try await run(makeSenders: { _ in senders }, configuration: configuration, body)
    }

    /// The templates the worker renders with; senders render with them too.
    static func templates() throws -> NotificationTemplates {
        try NotificationTemplates(appURL: "https://app.example.com")
    }

    /// - Parameter makeSenders: senders that need the harness's repository.
    static func run(
        makeSenders: (NotificationRepository) throws -> [any ChannelSender], configuration: DeliveryConfiguration = testConfiguration,
        _ body: (DeliveryHarness) async throws -> Void
    ) async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let location = try await StoreLocation.make(.sqlite, directory: directory)
                let opened = try await location.open()
                let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
                let templates = try templates()
                let repository = NotificationRepository(
                    store: opened.store, subjects: OutboundSubjects(dispatch: configuration.dispatchSubject), texts: templates)
                try await Dispatcher.ensureStream(configuration, connection: connection)
                let worker = try await NotificationWorker.prepare(
                    configuration: WorkerConfiguration(streamStorage: .memory, ackWait: .seconds(5), fetchWait: .milliseconds(100)),
                    connection: connection, repository: repository, logger: quietLogger)
                let dispatcher = try await Dispatcher.prepare(
                    configuration: configuration, connection: connection, repository: repository, senders: try makeSenders(repository),
                    logger: quietLogger)
                let group = ServiceGroup(services: [worker, dispatcher], logger: quietLogger)
                let task = Task { try await group.run() }
                let harness = DeliveryHarness(
                    server: server, connection: connection, jetStream: try JetStream(connection: connection), repository: repository,
                    configuration: configuration)
                var failure: (any Error)?
                do { try await body(harness) } catch { failure = error }
                await group.triggerGracefulShutdown()
                _ = await task.result
                await opened.close()
                await connection.close()
                if let failure { throw failure }
            }
        }
    }

    /// Publishes a like of `owner`'s post by `trigger` through JetStream.
    func like(owner: String, trigger: String = "ana", username: String? = "Ana", resource: String = "p-\(UUID().uuidString.prefix(8))") async throws {
        var body = #"{"owner":"\#(owner)","trigger_user":"\#(trigger)","action":1,"resource_type":"POST","resource_id":"\#(resource)","created_at":\#(Int(Date().timeIntervalSince1970)),"excerpt":"Sunset over the bay""#
        if let username { body += #","username":"\#(username)""# }
        body += "}"
        _ = try await jetStream.publish("notifications.post.like", payload: Array(body.utf8))
    }

    /// The owner's newest notification, once there is one.
    func newest(_ owner: String) async throws -> NotificationRecord? {
        try await repository.feed(owner: owner, limit: 1).items.first
    }

    /// The owner's newest notification's delivery on `channel`, once it
    /// reached a final status.
    func finalDelivery(_ owner: String, _ channel: DeliveryChannel, timeout: Duration = .seconds(20)) async throws -> ChannelDelivery? {
        var found: ChannelDelivery?
        _ = try await eventually(timeout: timeout) {
            found = try await newest(owner)?.deliveries.first { $0.channel == channel }
            return found?.status.isFinal == true
        }
        return found
    }

    /// The dead letters of `channel`, as stored.
    func deadLetters(_ channel: DeliveryChannel) async throws -> [StoredMessage] {
        guard let info = try await jetStream.streamInfo(configuration.streamName), info.lastSequence > 0 else { return [] }
        var found: [StoredMessage] = []
        for sequence in info.firstSequence...info.lastSequence {
            if let message = try await jetStream.message(stream: configuration.streamName, sequence: sequence),
               message.message.subject == configuration.subjectPrefix + ".dead." + channel.rawValue {
                found.append(message)
            }
        }
        return found
    }
}
