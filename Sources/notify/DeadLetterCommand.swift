import ArgumentParser
import Foundation
import JSON
import NATS
import Notifications

/// `notify dlq`: the dead letters kept in the JetStream stream
/// `<NATS_STREAM>_DLQ`.
struct DeadLetterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Inspect, replay and purge dead letters (the stream NATS_STREAM + \"_DLQ\").",
        subcommands: [DeadLetterList.self, DeadLetterShow.self, DeadLetterReplay.self, DeadLetterPurge.self]
    )
}

/// The dead-letter stream and subjects the worker's settings name, and a
/// JetStream context on it; ends the process with one line when NATS or
/// the stream is not there.
struct DeadLetters {
    let jetStream: JetStream
    let stream: String
    let prefix: String

    static func open(_ common: CommonSettings) async -> (DeadLetters, NATSConnection) {
        let reader = SettingsReader(environment: ProcessInfo.processInfo.environment)
        let worker = settingsOrExit { try WorkerSettings(reader, common: common, flags: try WorkerOptions.parse([])) }.worker
        guard let stream = worker.deadLetterStream?.name else {
            fail("dead letters are kept in a stream only with JetStream (NATS_JETSTREAM=true)", code: exitBadSetting)
        }
        let connection = await common.connect()
        do {
            let jetStream = try JetStream(connection: connection)
            guard try await jetStream.streamInfo(stream) != nil else {
                await connection.close()
                fail("the dead-letter stream \(stream) does not exist (a worker creates it at start-up; check NATS_STREAM)", code: exitUnavailable)
            }
            return (DeadLetters(jetStream: jetStream, stream: stream, prefix: worker.deadLetterPrefix + "."), connection)
        } catch {
            await connection.close()
            fail("cannot read \(stream): \(error.description)", code: exitUnavailable)
        }
    }

    /// Opens the dead letters, runs `body` and closes the connection; an
    /// error ends the process with one line saying what could not be done.
    static func with(_ settings: CommonSettings, to action: String, _ body: (DeadLetters) async throws -> Void) async throws {
        try await withNATSLibrary {
            let (deadLetters, connection) = await open(settings)
            do {
                try await body(deadLetters)
            } catch let exit as ExitCode {
                await connection.close()
                throw exit
            } catch {
                await connection.close()
                fail("cannot \(action) \(deadLetters.stream): \(error)", code: exitUnavailable)
            }
            await connection.close()
        }
    }

    /// Every dead letter from `first` on, oldest first, with `body` called
    /// on each until it returns `false`.
    func forEach(from first: UInt64 = 0, _ body: (StoredMessage) async throws -> Bool) async throws {
        guard let info = try await jetStream.streamInfo(stream), info.messages > 0 else { return }
        var sequence = max(first, info.firstSequence)
        while sequence <= info.lastSequence {
            if let stored = try await jetStream.message(stream: stream, sequence: sequence), try await !body(stored) { return }
            sequence += 1
        }
    }

    /// The subject the event was published on before it was dead-lettered.
    func originalSubject(_ stored: StoredMessage) -> String {
        let subject = stored.message.subject
        return subject.hasPrefix(prefix) ? String(subject.dropFirst(prefix.count)) : subject
    }

    /// One line of JSON about a dead letter; with `body`, its headers and body too.
    func describe(_ stored: StoredMessage, body: Bool) -> String {
        let headers = stored.message.headers
        var fields: [(String, JSONValue)] = [
            ("seq", .integer(Int64(stored.sequence))),
            ("time", .string(ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(stored.time) / 1e9)))),
            ("subject", .string(originalSubject(stored))),
            ("reason", .string(headers["Notify-Error"] ?? "-")),
            ("attempts", .integer(Int64(headers["Notify-Attempts"] ?? "") ?? 0)),
            ("bytes", .integer(Int64(stored.message.payload.count))),
        ]
        if let detail = headers["Notify-Detail"] { fields.append(("detail", .string(detail))) }
        if let cut = headers["Notify-Body-Truncated"] { fields.append(("truncated_from", .integer(Int64(cut) ?? 0))) }
        if body {
            fields.append(("headers", .object(Dictionary(headers.fields.map { ($0.name, JSONValue.string($0.value)) }, uniquingKeysWith: { first, _ in first }))))
            fields.append(("body", .string(String(decoding: stored.message.payload, as: UTF8.self))))
        }
        return jsonLine(fields)
    }
}

/// `{"key":value,…}` with the keys in the order given.
func jsonLine(_ fields: [(String, JSONValue)]) -> String {
    var writer = JSONWriter()
    writer.raw("{")
    for (index, (key, value)) in fields.enumerated() {
        if index > 0 { writer.raw(",") }
        writer.string(key)
        writer.raw(":")
        writer.value(value)
    }
    writer.raw("}")
    return String(decoding: writer.bytes, as: UTF8.self)
}

/// `notify dlq list`.
struct DeadLetterList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "One JSON line per dead letter, oldest first: seq, time, original subject, reason, attempts, size."
    )

    @OptionGroup var common: CommonOptions

    @Option(name: .customLong("reason"), help: "Only dead letters with this reason (Notify-Error), e.g. store_failed.")
    var reason: String?

    @Option(name: .customLong("limit"), help: "At most this many lines.")
    var limit: Int = 1_000

    func run() async throws {
        let settings = CommonSettings.load(common)
        try await DeadLetters.with(settings, to: "read") { deadLetters in
            var printed = 0
            try await deadLetters.forEach { stored in
                guard reason == nil || stored.message.headers["Notify-Error"] == reason else { return true }
                print(deadLetters.describe(stored, body: false))
                printed += 1
                return printed < limit
            }
        }
    }
}

/// `notify dlq show`.
struct DeadLetterShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "A dead letter with its headers and body, as one JSON line."
    )

    @OptionGroup var common: CommonOptions

    @Argument(help: "Its sequence in the dead-letter stream (from `notify dlq list`).")
    var sequence: UInt64

    func run() async throws {
        let settings = CommonSettings.load(common)
        try await DeadLetters.with(settings, to: "read") { deadLetters in
            guard let stored = try await deadLetters.jetStream.message(stream: deadLetters.stream, sequence: sequence) else {
                fail("no dead letter \(sequence) in \(deadLetters.stream)", code: exitBadSetting)
            }
            print(deadLetters.describe(stored, body: true))
        }
    }
}

/// `notify dlq replay`.
struct DeadLetterReplay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Publish dead letters again on their original subject, then remove them from the dead-letter stream.",
        discussion: """
            The worker validates a replayed event like any other: one that is still wrong is \
            dead-lettered again, with a new sequence. A body cut to fit the dead letter \
            (Notify-Body-Truncated) is not replayed. Each replay carries the header \
            Notify-Replayed-From: <seq> and Nats-Msg-Id notify-dlq-<stream>-<seq>, so a \
            replay interrupted between publishing and removing, and run again, publishes \
            it once (within the stream's duplicate window, 2 minutes by default).
            """
    )

    @OptionGroup var common: CommonOptions

    @Argument(help: "Sequences in the dead-letter stream (from `notify dlq list`).")
    var sequences: [UInt64] = []

    @Flag(name: .customLong("all"), help: "Every dead letter (with --reason: every one with that reason).")
    var all = false

    @Option(name: .customLong("reason"), help: "With --all: only dead letters with this reason.")
    var reason: String?

    func validate() throws {
        guard all != !sequences.isEmpty else { throw ValidationError("give sequences or --all, not both and not neither") }
        guard reason == nil || all else { throw ValidationError("--reason goes with --all") }
    }

    func run() async throws {
        let settings = CommonSettings.load(common)
        try await DeadLetters.with(settings, to: "replay from") { deadLetters in
            var chosen: [StoredMessage] = []
            var failures = 0
            if all {
                try await deadLetters.forEach { stored in
                    if reason == nil || stored.message.headers["Notify-Error"] == reason { chosen.append(stored) }
                    return true
                }
            } else {
                for sequence in sequences {
                    if let stored = try await deadLetters.jetStream.message(stream: deadLetters.stream, sequence: sequence) {
                        chosen.append(stored)
                    } else {
                        FileHandle.standardError.write(Data("notify: error: no dead letter \(sequence) in \(deadLetters.stream)\n".utf8))
                        failures += 1
                    }
                }
            }
            for stored in chosen {
                if stored.message.headers["Notify-Body-Truncated"] != nil {
                    FileHandle.standardError.write(Data("notify: error: dead letter \(stored.sequence) holds a cut body; publish the original again from its producer\n".utf8))
                    failures += 1
                    continue
                }
                let subject = deadLetters.originalSubject(stored)
                let ack = try await deadLetters.jetStream.publish(
                    subject, payload: stored.message.payload, headers: ["Notify-Replayed-From": String(stored.sequence)],
                    messageID: "notify-dlq-\(deadLetters.stream)-\(stored.sequence)")
                try await deadLetters.jetStream.deleteMessage(stream: deadLetters.stream, sequence: stored.sequence)
                print(jsonLine([
                    ("seq", .integer(Int64(stored.sequence))), ("subject", .string(subject)), ("stream", .string(ack.stream)),
                    ("stream_seq", .integer(Int64(ack.sequence))), ("duplicate", .bool(ack.duplicate)),
                ]))
            }
            if failures > 0 { throw ExitCode(exitBadSetting) }
        }
    }
}

/// `notify dlq purge`.
struct DeadLetterPurge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "purge",
        abstract: "Remove dead letters older than a duration, or all of them."
    )

    @OptionGroup var common: CommonOptions

    @Option(name: .customLong("older-than"), help: "Remove those dead-lettered longer ago than this, e.g. 7d or 12h.")
    var olderThan: String?

    @Flag(name: .customLong("all"), help: "Remove every dead letter.")
    var all = false

    func validate() throws {
        guard all != (olderThan != nil) else { throw ValidationError("give --older-than or --all") }
    }

    func run() async throws {
        let settings = CommonSettings.load(common)
        let age = settingsOrExit { () throws -> Duration? in
            guard let olderThan else { return nil }
            return try SettingsReader(environment: [:]).duration("--older-than", flag: olderThan, default: nil)
        }
        try await DeadLetters.with(settings, to: "purge") { deadLetters in
            let before = try await deadLetters.jetStream.streamInfo(deadLetters.stream)?.messages ?? 0
            if let age {
                let cutoff = Int64(Date().timeIntervalSince1970 * 1e9) - age.components.seconds * 1_000_000_000
                var firstKept: UInt64?
                try await deadLetters.forEach { stored in
                    if stored.time >= cutoff { firstKept = stored.sequence }
                    return firstKept == nil
                }
                let end = (try await deadLetters.jetStream.streamInfo(deadLetters.stream)?.lastSequence ?? 0) + 1
                try await deadLetters.jetStream.purge(stream: deadLetters.stream, before: firstKept ?? end)
            } else {
                try await deadLetters.jetStream.purge(stream: deadLetters.stream)
            }
            let after = try await deadLetters.jetStream.streamInfo(deadLetters.stream)?.messages ?? 0
            print(#"{"purged":\#(before - min(before, after)),"kept":\#(after)}"#)
        }
    }
}
