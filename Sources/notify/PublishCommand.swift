import ArgumentParser
import Foundation
import NATS
import Notifications

/// `notify publish`: publish one event, like `nats pub`.
struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish one event (JSON from the argument or standard input) and print the JetStream ack.",
        discussion: """
            Example: notify publish notifications.post.like \
            '{"owner":"ana","trigger_user":"ben","action":1,"resource_type":"POST","resource_id":"p1","created_at":1765318000}'
            The body is sent as given; when the worker would reject it, a warning says why.
            """
    )

    @OptionGroup var common: CommonOptions

    @Argument(help: "The subject, e.g. notifications.post.like.")
    var subject: String

    @Argument(help: "The event body; read from standard input when absent.")
    var json: String?

    @Flag(name: .customLong("core"), help: "Publish on core NATS, without waiting for a JetStream ack.")
    var core = false

    @Option(name: .customLong("header"), help: "A header as Name:Value (repeatable).")
    var headers: [String] = []

    @Option(name: .customLong("msg-id"), help: "Nats-Msg-Id for JetStream de-duplication.")
    var messageID: String?

    func run() async throws {
        let settings = CommonSettings.load(common)
        guard CommonSettings.isValidSubject(subject, wildcards: false) else {
            fail("'\(subject)' is not a valid subject to publish on", code: exitBadSetting)
        }
        var natsHeaders = NATSHeaders()
        for header in headers {
            guard let colon = header.firstIndex(of: ":"), colon != header.startIndex else {
                fail("--header '\(header)' must look like Name:Value", code: exitBadSetting)
            }
            natsHeaders.append(String(header[..<colon]), String(header[header.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
        let body: [UInt8]
        if let json {
            body = Array(json.utf8)
        } else {
            body = Array(FileHandle.standardInput.readDataToEndOfFile())
        }
        // As a worker with enrichment on (the default) and this CDN_BASE_URL judges it.
        let validator = EventValidator(
            subjects: EventSubjects(filter: settings.subject),
            pictures: PictureURLs(base: ProcessInfo.processInfo.environment["CDN_BASE_URL"].flatMap { $0.isEmpty ? nil : $0 }), acceptsUpdates: true)
        if case .failure(let rejection) = validator.validateInbound(subject: subject, body: body, now: Int64(Date().timeIntervalSince1970)) {
            FileHandle.standardError.write(Data("notify: warning: the worker will dead-letter this event (\(rejection))\n".utf8))
        }

        try await withNATSLibrary { try await publish(body, headers: natsHeaders, settings: settings) }
    }

    private func publish(_ body: [UInt8], headers natsHeaders: NATSHeaders, settings: CommonSettings) async throws {
        let connection = await settings.connect()
        do {
            if core {
                try connection.publish(subject, payload: body, headers: natsHeaders)
                try await connection.flush()
                print(#"{"subject":"\#(subject)","core":true}"#)
            } else {
                let jetStream = try JetStream(connection: connection)
                let ack = try await jetStream.publish(subject, payload: body, headers: natsHeaders, messageID: messageID)
                print(#"{"stream":"\#(ack.stream)","seq":\#(ack.sequence),"duplicate":\#(ack.duplicate)}"#)
            }
        } catch {
            await connection.close()
            fail(error.description, code: exitUnavailable)
        }
        await connection.close()
    }
}
