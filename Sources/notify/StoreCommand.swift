import ArgumentParser
import DynamoDBStore
import Foundation
import KeyValueStore
import SQLiteStore

/// `notify store`: operations on the store itself.
struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Operations on the store (STORE=sqlite or dynamodb).",
        subcommands: [CreateTableCommand.self]
    )
}

/// `notify store create-table`: makes the table the worker and gateway use.
struct CreateTableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-table",
        abstract: "Create the store's table if it does not exist; safe to run again.",
        discussion: """
            DynamoDB: a table with string keys pk (partition) and sk (sort), on-demand \
            capacity, and DynamoDB's TTL on expires_at; waits until it is active. \
            SQLite: the table in DATA_DIR/notify.sqlite (the worker also creates it).
            """
    )

    @OptionGroup var store: StoreOptions

    func run() async throws {
        let reader = SettingsReader(environment: ProcessInfo.processInfo.environment)
        let settings = settingsOrExit { try StoreSettings(reader, flags: store) }
        switch settings.backend {
        case .sqlite:
            let (_, database) = await Runtime.openSQLite(settings)
            await database.close()
            print("table '\(settings.tableName)' is ready in \(settings.databasePath)")
        case .dynamodb(let configuration):
            do {
                let setup = try await DynamoDBKeyValueStore(configuration: configuration).createTable()
                print("\(setup) (\(configuration.endpoint), region \(configuration.region))")
            } catch {
                fail("cannot create the table (\(settings.location)): \(error.message)", code: exitUnavailable)
            }
        }
    }
}
