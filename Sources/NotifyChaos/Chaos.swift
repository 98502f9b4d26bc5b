import Foundation
import NATS

/// `make chaos`: real faults against real processes — the release `notify`
/// and `nats-server` — and a table of what must hold under each, what was
/// measured, and whether it held. Exits 1 when any check fails.
@main
struct Chaos {
    /// A named scenario: starts its own nats-server and processes in its
    /// own directory, injects its faults, and returns its checks.
    struct Scenario: Sendable {
        let name: String
        let fault: String
        let run: @Sendable (Harness, inout Checks) async throws -> Void
    }

    static let scenarios: [Scenario] = [
        Scenario(name: "worker-sigkill", fault: "worker SIGKILL ×20 during 10,000 events (10% duplicates)", run: WorkerCrashes.sigkill),
        Scenario(name: "worker-sigstop", fault: "worker SIGSTOP 4 s > AckWait 2 s, then SIGCONT (late ack)", run: WorkerCrashes.sigstop),
        Scenario(name: "crash-points", fault: "worker kills itself after commit / after publish (NOTIFY_TEST_CRASH_POINT), 3× each", run: WorkerCrashes.crashPoints),
        Scenario(name: "redelivery-order", fault: "a worker dies holding a create; its retraction is consumed first", run: WorkerCrashes.redeliveryOrder),
        Scenario(name: "nats-outage", fault: "nats-server SIGTERM / SIGKILL (restart, same port and store) / SIGSTOP 30 s", run: NATSOutage.run),
        Scenario(name: "sqlite-locked", fault: "another process holds the SQLite write lock for 30 s", run: StoreFaults.locked),
        Scenario(name: "disk-full", fault: "DATA_DIR (a 24 MiB tmpfs) filled up under load for 20 s, then freed", run: DiskFull.run),
        Scenario(name: "sqlite-corrupt", fault: "SQLite file overwritten (pages 2…) while the worker is stopped", run: StoreFaults.corrupt),
        Scenario(name: "truncated-wal", fault: "worker and a snapshot-pinning reader SIGKILLed, then the WAL cut inside a frame 60% in", run: StoreFaults.truncatedWAL),
        Scenario(name: "hostile-events", fault: "hostile event bodies", run: HostileEvents.run),
        Scenario(name: "hostile-ids", fault: "ids >, *, a.b, a b, $SYS, empty, non-ASCII… in events and tokens; created_at at its edges", run: HostileIDs.run),
        Scenario(name: "poison-event", fault: "an event the store refuses every time (SQLite trigger), among others' steady traffic", run: PoisonEvent.run),
        Scenario(name: "bad-tokens", fault: "10,000 bad JWTs on /v1/notifications and /ws", run: BadTokens.run),
        Scenario(name: "gateway-sigkill", fault: "gateway SIGKILL ×3 under load, clients resume with since", run: GatewayCrashes.run),
        Scenario(name: "slow-reader", fault: "a WebSocket client that never reads while 100,000 notifications go to its user", run: SlowReader.run),
        Scenario(name: "connection-flood", fault: "5,000 connections at once: slowloris upgrades, 1,005 WebSockets (25 for one user), then 2 MiB frames", run: ConnectionFlood.run),
    ]

    static func main() async {
        var only: Set<String> = []
        var keep = false
        var cluster = false
        var clusterEvents = 20_000
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--only":
                only.formUnion((arguments.next() ?? "").split(separator: ",").map(String.init))
            case "--keep":
                keep = true
            case "--cluster":
                cluster = true
            case "--events":
                guard let count = arguments.next().flatMap({ Int($0) }), count >= 100 else {
                    FileHandle.standardError.write(Data("--events needs a number of at least 100\n".utf8))
                    exit(2)
                }
                clusterEvents = count
            case "--list":
                for scenario in scenarios { print("\(scenario.name)\t\(scenario.fault)") }
                return
            default:
                FileHandle.standardError.write(Data("""
                    usage: NotifyChaos [--only NAME[,NAME…]] [--keep] [--list]
                           NotifyChaos --cluster [--events N] [--keep]
                      --only     run these scenarios (see --list)
                      --keep     keep every scenario's directory (/tmp/chaos-*: logs, data); failed ones are always kept
                      --cluster  the scale-out scenario instead: 3 clustered nats-servers, moto's DynamoDB
                                 server, 2 workers, 2 gateways; N events (default 20,000)

                    """.utf8))
                exit(2)
            }
        }
        let unknown = only.subtracting(scenarios.map(\.name))
        guard unknown.isEmpty else {
            FileHandle.standardError.write(Data("unknown scenario \(unknown.sorted().joined(separator: ", ")); NotifyChaos --list names them\n".utf8))
            exit(2)
        }
        var rows: [Check] = []
        if cluster {
            rows = await ClusterTest.run(events: clusterEvents, owners: 100, keep: keep)
        }
        for scenario in scenarios where !cluster && (only.isEmpty || only.contains(scenario.name)) {
            rows += await run(scenario, keep: keep)
        }
        NATSLibrary.shutdown()
        print(renderTable(rows))
        let failed = rows.filter { !$0.passed }.count
        print(failed == 0 ? "\nall \(rows.count) checks passed" : "\n\(failed) of \(rows.count) checks FAILED")
        exit(failed == 0 ? 0 : 1)
    }

    static func run(_ scenario: Scenario, keep: Bool) async -> [Check] {
        progress("=== \(scenario.name): \(scenario.fault)")
        let started = ContinuousClock.now
        var checks = Checks(fault: scenario.fault)
        let harness: Harness
        do {
            harness = try await Harness.start(name: scenario.name)
        } catch {
            checks.add("the scenario runs", "could not start: \(error)", false)
            return checks.rows
        }
        do {
            try await scenario.run(harness, &checks)
        } catch {
            checks.add("the scenario runs to the end", "stopped by: \(error)", false)
        }
        await harness.shutdown(keep: keep || !checks.passed)
        progress("=== \(scenario.name) done in \(Int(seconds(ContinuousClock.now - started))) s: \(checks.passed ? "PASS" : "FAIL")")
        return checks.rows
    }
}
