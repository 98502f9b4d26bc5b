import Foundation
import NATS
import ProcessSupport

/// `NotifyBenchmark --cluster true [--workers N]`: the worker throughput on
/// the scale-out deployment, all on this machine: three clustered
/// nats-servers with the stream on three replicas, moto's DynamoDB server
/// as the store, and N `notify worker` processes. Reports events/s and the
/// CPU each part spent per event.
enum ClusterBenchmark {
    static func run(_ options: Benchmark.Options, directory: String) async throws -> [String: Any] {
        let emulator = try await DynamoDBEmulatorProcess.start(log: directory + "/moto.log")
        defer { emulator.stop() }
        let servers = try await NATSServerProcess.startCluster(directory: directory, size: 3)
        defer { servers.forEach { $0.stop() } }
        progress("nats-servers on ports \(servers.map { String($0.port) }.joined(separator: ", ")), DynamoDB emulator at \(emulator.endpoint)")
        let environment = [
            "NATS_URL": servers.map(\.url).joined(separator: ","), "NATS_STREAM_REPLICAS": "3",
            "WORKER_BATCH_SIZE": String(options.batchSize), "LOG_LEVEL": "info", "ENVIRONMENT": "development",
            "DATA_DIR": directory + "/data",
        ].merging(emulator.notifyEnvironment(table: "bench-notifications")) { _, new in new }
        try await emulator.createTable(environment: environment, log: directory + "/create-table.log")

        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [servers[0].url]))
        let users = try connection.subscribe("users.>", bufferLimit: 4_000_000)
        try await connection.flush()
        let workers = try (1...options.workers).map { index in
            try NotifyProcess.start(command: "worker", environment: environment, log: directory + "/worker-\(index).log")
        }
        defer { workers.forEach { $0.stop() } }
        for worker in workers { try await worker.waitUntilRunning() }

        var result: [String: Any] = ["mode": "cluster", "workers": options.workers, "owners": options.owners, "batch_size": options.batchSize]
        let receiver = Receiver(users)
        let cpuBefore = (workers: workers.map { $0.cpuSeconds() ?? 0 }, nats: servers.map { $0.cpuSeconds() ?? 0 }, store: emulator.cpuSeconds() ?? 0)
        try await Benchmark.throughput(options, connection: connection, receiver: receiver, timeout: .seconds(3_600), result: &result)
        let spent = { (after: [Double?], before: [Double]) -> [Double?] in
            zip(after, before).map { pair in pair.0.map { $0 - pair.1 } }
        }
        result["worker_cpu_ms_per_event"] = Benchmark.cpuMillisecondsPerEvent(spent(workers.map { $0.cpuSeconds() }, cpuBefore.workers), events: options.events)
        result["nats_cpu_ms_per_event"] = Benchmark.cpuMillisecondsPerEvent(spent(servers.map { $0.cpuSeconds() }, cpuBefore.nats), events: options.events)
        result["dynamodb_emulator_cpu_ms_per_event"] = Benchmark.cpuMillisecondsPerEvent(spent([emulator.cpuSeconds()], [cpuBefore.store]), events: options.events)
        result["consumer_drained"] = try await Benchmark.waitUntilDrained(try JetStream(connection: connection))
        result["worker_peak_rss_mib"] = workers.map { $0.peakRSSMiB() }.max() ?? 0
        result["cores"] = ProcessInfo.processInfo.activeProcessorCount
        receiver.stop()
        await connection.close()
        return result
    }
}
