import ArgumentParser
import Foundation
import NATS

/// `notify subscribe`: print messages as they arrive, like `nats sub`.
struct SubscribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subscribe",
        abstract: "Print every message on a subject (wildcards allowed) until interrupted.",
        discussion: "Example: notify subscribe 'users.>' shows the per-user messages the worker publishes."
    )

    @OptionGroup var common: CommonOptions

    @Argument(help: "The subject, e.g. 'users.>' or 'dlq.>'.")
    var subject: String

    @Option(name: .customLong("count"), help: "Exit after this many messages.")
    var count: Int?

    func run() async throws {
        let settings = CommonSettings.load(common)
        guard CommonSettings.isValidSubject(subject, wildcards: true) else {
            fail("'\(subject)' is not a valid subject", code: exitBadSetting)
        }
        try await withNATSLibrary { try await listen(settings) }
    }

    private func listen(_ settings: CommonSettings) async throws {
        let connection = await settings.connect()
        let subscription = try connection.subscribe(subject)
        try await connection.flush()
        FileHandle.standardError.write(Data("notify: listening on \(subject)\n".utf8))
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT)
        signal(SIGINT, SIG_IGN)
        interrupt.setEventHandler { subscription.unsubscribe() }
        interrupt.resume()
        var received = 0
        for await message in subscription {
            var line = "[\(message.subject)]"
            for field in message.headers.fields { line += " \(field.name)=\(field.value)" }
            print(line + " " + String(decoding: message.payload, as: UTF8.self))
            fflush(nil)
            received += 1
            if let count, received >= count { break }
        }
        interrupt.cancel()
        subscription.unsubscribe()
        await connection.close()
    }
}
