import ArgumentParser
import Foundation
import NATS

/// `notify`: the notification service's one executable.
@main
struct Notify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notify",
        abstract: "Turns NATS events into durable per-user notification feeds.",
        discussion: """
            Every setting comes from the environment (see the README) and may be \
            overridden by the matching flag.
            """,
        subcommands: [ServeCommand.self, WorkerCommand.self, GatewayCommand.self, DispatcherCommand.self, PublishCommand.self, SubscribeCommand.self, StoreCommand.self, DeadLetterCommand.self, DoctorCommand.self, WebPushKeysCommand.self]
    )
}

/// Ends the process with a one-line error on standard error.
func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("notify: error: \(message)\n".utf8))
    exit(code)
}

/// Runs `body`, then releases nats.c's library resources. Every NATS object
/// must be created inside `body` so that all are gone when it returns.
func withNATSLibrary(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch {
        NATSLibrary.shutdown()
        throw error
    }
    NATSLibrary.shutdown()
}

/// Exit status for a setting that cannot be used.
let exitBadSetting: Int32 = 2
/// Exit status for a dependency that cannot be reached or opened.
let exitUnavailable: Int32 = 1
