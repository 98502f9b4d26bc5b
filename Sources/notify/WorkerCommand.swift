import ArgumentParser
import Foundation
import Logging
import Notifications

/// `notify worker`: consume events, store them, publish per-user messages.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run the worker: NATS events → validated, deduplicated, stored → users.<owner>.notifications.",
        discussion: "Run several to share the work: they share the durable consumer (and, with SQLite, DATA_DIR)."
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var options: WorkerOptions
    @OptionGroup var delivery: DeliveryOptions
    @OptionGroup var operations: OperationsOptions

    func run() async throws {
        let common = CommonSettings.load(common)
        let reader = SettingsReader(environment: ProcessInfo.processInfo.environment)
        let (storeSettings, workerSettings, deliverySettings, operationsSettings) = settingsOrExit {
            let worker = try WorkerSettings(reader, common: common, flags: options)
            return (try StoreSettings(reader, flags: store), worker, try DeliverySettings(reader, flags: delivery, worker: worker),
                    try OperationsSettings(reader, flags: operations))
        }
        try await ServiceRunner.run(common: common, store: storeSettings, delivery: deliverySettings) { runtime in
            try await runtime.worker(workerSettings, store: storeSettings, delivery: deliverySettings)
                + (try runtime.operations(operationsSettings, consumer: workerSettings.consumerName))
        }
    }
}

/// `notify gateway`: HTTP, WebSocket and SSE for clients.
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run the gateway: the feed API, live WebSocket and SSE delivery, on PORT.",
        discussion: "Run several behind a load balancer: gateways share nothing but NATS and the store."
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var options: GatewayOptions

    @Option(name: .customLong("templates-dir"), help: "Directory of Mustache templates overriding the defaults, as the worker's: titles are rendered again when an actor's name changed. [env: TEMPLATES_DIR]")
    var templatesDirectory: String?

    func run() async throws {
        let common = CommonSettings.load(common)
        let reader = SettingsReader(environment: ProcessInfo.processInfo.environment)
        let (storeSettings, gatewaySettings, templates) = settingsOrExit {
            (try StoreSettings(reader, flags: store),
             try GatewaySettings(reader, common: common, flags: options, consumer: GatewaySettings.environmentConsumer(reader, common: common)),
             try DeliverySettings.templates(reader, directory: templatesDirectory))
        }
        try await ServiceRunner.run(common: common, store: storeSettings, templates: templates) { runtime in
            try runtime.gateway(gatewaySettings)
        }
    }
}

/// `notify serve`: worker and gateway in one process.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the worker and the gateway in one process (what `make run` starts)."
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var workerOptions: WorkerOptions
    @OptionGroup var gatewayOptions: GatewayOptions
    @OptionGroup var deliveryOptions: DeliveryOptions

    func run() async throws {
        let common = CommonSettings.load(common)
        let reader = SettingsReader(environment: ProcessInfo.processInfo.environment)
        let (storeSettings, workerSettings, gatewaySettings, deliverySettings) = settingsOrExit {
            let worker = try WorkerSettings(reader, common: common, flags: workerOptions)
            return (try StoreSettings(reader, flags: store), worker,
                    try GatewaySettings(reader, common: common, flags: gatewayOptions, consumer: worker.consumerName),
                    try DeliverySettings(reader, flags: deliveryOptions, worker: worker))
        }
        try await ServiceRunner.run(common: common, store: storeSettings, delivery: deliverySettings) { runtime in
            // Stopped in reverse: gateway first (clients closed with 1001),
            // then the dispatcher settles its jobs, then the worker
            // finishes and acknowledges its batch.
            try await runtime.worker(workerSettings, store: storeSettings, delivery: deliverySettings)
                + (await runtime.dispatcher(deliverySettings)) + (try runtime.gateway(gatewaySettings))
        }
    }
}

/// `notify dispatcher`: delivery through email, Web Push and webhooks.
struct DispatcherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatcher",
        abstract: "Run the dispatcher: new notifications → delivery jobs → email, Web Push, webhooks (DELIVERY_CHANNELS).",
        discussion: "Run several to share the work: they share the delivery stream's durable consumers. `serve` runs one too."
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var store: StoreOptions
    @OptionGroup var delivery: DeliveryOptions
    @OptionGroup var operations: OperationsOptions

    func run() async throws {
        let common = CommonSettings.load(common)
        let reader = SettingsReader(environment: ProcessInfo.processInfo.environment)
        let (storeSettings, deliverySettings, operationsSettings) = settingsOrExit {
            (try StoreSettings(reader, flags: store), try DeliverySettings(reader, flags: delivery, worker: nil),
             try OperationsSettings(reader, flags: operations))
        }
        guard !deliverySettings.channels.isEmpty else {
            fail("no channel to deliver on: set DELIVERY_CHANNELS (email, webpush, webhook)", code: exitBadSetting)
        }
        try await ServiceRunner.run(common: common, store: storeSettings, delivery: deliverySettings) { runtime in
            await runtime.dispatcher(deliverySettings) + (try runtime.operations(operationsSettings, consumer: nil))
        }
    }
}

/// The value of `body`, or a one-line error and exit status 2.
func settingsOrExit<T>(_ body: () throws -> T) -> T {
    do {
        return try body()
    } catch {
        fail("\(error)", code: exitBadSetting)
    }
}
