import Foundation
import NATS
import ProcessSupport
import Synchronization

/// nats-server goes away three ways while a worker, a gateway and a
/// publisher keep running: SIGTERM and SIGKILL (restarted on the same port
/// with the same store after 10 s), and SIGSTOP for 30 s.
enum NATSOutage {
    enum Fault: String, CaseIterable {
        case sigterm = "SIGTERM", sigkill = "SIGKILL", sigstop = "SIGSTOP"

        var outage: Duration { self == .sigstop ? .seconds(30) : .seconds(10) }
    }

    static let probeUser = "w0"

    /// A follow of ``probeUser``, published after each recovery.
    static func probeEvent(_ number: Int) -> ChaosEvent {
        ChaosEvent(kind: "user.follow", owner: probeUser, trigger: "probe\(number)", resource: probeUser, eventID: "probe-\(number)")
    }

    static func run(_ harness: Harness, _ checks: inout Checks) async throws {
        let worker = try await harness.startNotify("worker")
        let gateway = try await harness.startNotify("gateway")
        let port = try await gateway.waitForPort()
        let client = FeedClient(user: probeUser, token: Tokens.valid(user: probeUser))
        let clientTask = Task { await client.run(port: port) }

        // A steady stream of distinct creates, each with its own action key.
        let published = Mutex<[ChaosEvent]>([])
        let log = PublishLog()
        let stop = Atomic<Bool>(false)
        let jetStream = harness.jetStream
        let publisher = Task {
            var index = 0
            while !stop.load(ordering: .relaxed) {
                let event = ChaosEvent(kind: "post.like", owner: "u\(index % 20)", trigger: "t\(index)", resource: "r\(index)", eventID: "e\(index)")
                published.withLock { $0.append(event) }
                await publish(event, index: index, jetStream: jetStream, log: log)
                index += 1
                try? await Task.sleep(for: .milliseconds(10))
            }
        }

        var probes = 0
        for fault in Fault.allCases {
            try await Task.sleep(for: .seconds(2))
            let before = (worker: worker.cpuSeconds() ?? 0, gateway: gateway.cpuSeconds() ?? 0)
            let acknowledgedBefore = log.acknowledged.count
            let server = harness.server
            switch fault {
            case .sigterm, .sigkill:
                server.signal(fault == .sigterm ? SIGTERM : SIGKILL)
                guard await server.waitForExit() else { throw ChaosError("nats-server did not exit on \(fault.rawValue)") }
            case .sigstop:
                server.signal(SIGSTOP)
            }
            let down = ContinuousClock.now
            progress("nats-server \(fault.rawValue): down for \(fault.outage)")
            try await Task.sleep(for: .seconds(3))
            let healthDuringOutage = (try? await HTTPProbe.request(port: port, path: "/health").status).map(String.init) ?? "no answer"
            try await Task.sleep(until: down + fault.outage, clock: .continuous)
            let after = (worker: worker.cpuSeconds() ?? 0, gateway: gateway.cpuSeconds() ?? 0)
            let outageSeconds = seconds(ContinuousClock.now - down)
            let acknowledgedDuring = log.acknowledged.count - acknowledgedBefore
            if fault == .sigstop {
                server.signal(SIGCONT)
            } else {
                try await harness.restartServer()
            }
            let back = ContinuousClock.now

            // Recovery: the gateway's health, and a fresh notification
            // reaching the WebSocket opened before the outage.
            var healthy: Double?
            while healthy == nil, ContinuousClock.now - back < .seconds(30) {
                if (try? await HTTPProbe.request(port: port, path: "/health").status) == 200 { healthy = seconds(ContinuousClock.now - back) }
                else { try await Task.sleep(for: .milliseconds(100)) }
            }
            probes += 1
            let probe = probeEvent(probes)
            var probeAcked = false
            while !probeAcked, ContinuousClock.now - back < .seconds(30) {
                probeAcked = (try? await jetStream.publish(probe.subject, payload: probe.body)) != nil
            }
            var delivered: Double?
            while delivered == nil, ContinuousClock.now - back < .seconds(45) {
                if client.snapshot.actionKeys.contains(probe.actionKey) { delivered = seconds(ContinuousClock.now - back) }
                else { try await Task.sleep(for: .milliseconds(50)) }
            }
            let workerCPU = (after.worker - before.worker) / outageSeconds * 100
            let gatewayCPU = (after.gateway - before.gateway) / outageSeconds * 100
            progress(String(format: "recovered from %@: healthy after %@, probe delivered after %@; worker CPU %.2f%%, gateway CPU %.2f%% while down",
                            fault.rawValue, healthy.map { String(format: "%.1f s", $0) } ?? "never", delivered.map { String(format: "%.1f s", $0) } ?? "never", workerCPU, gatewayCPU))
            checks.add("\(fault.rawValue): worker and gateway reconnect by themselves; a new event reaches a WebSocket opened before",
                       "worker alive \(worker.isRunning), gateway alive \(gateway.isRunning); /health 200 after \(healthy.map { String(format: "%.1f s", $0) } ?? "never (30 s)"); probe event acked \(probeAcked), on the WebSocket after \(delivered.map { String(format: "%.1f s", $0) } ?? "never (45 s)")",
                       worker.isRunning && gateway.isRunning && healthy != nil && delivered != nil)
            checks.add("\(fault.rawValue): gateway /health answers 503 while NATS is down or frozen (§5)", "/health 3 s into the outage: \(healthDuringOutage)",
                       healthDuringOutage == "503")
            checks.add("\(fault.rawValue): worker CPU while NATS is down < 5% of a core",
                       String(format: "worker %.2f%%, gateway %.2f%% of a core over %.0f s; /health during the outage: %@; %d publishes acked during it",
                              workerCPU, gatewayCPU, outageSeconds, healthDuringOutage, acknowledgedDuring),
                       workerCPU < 5)
        }
        stop.store(true, ordering: .relaxed)
        await publisher.value
        let drained = await harness.waitUntilDrained()
        let events = published.withLock { $0 }
        let acknowledged = Set(log.acknowledged.map(\.index))
        let required = acknowledged.reduce(into: [String: Set<String>]()) { $0[events[$1].owner, default: []].insert(events[$1].actionKey) }
        var allowed = events.indices.filter { !acknowledged.contains($0) }.reduce(into: [String: Set<String>]()) {
            $0[events[$1].owner, default: []].insert(events[$1].actionKey)
        }
        // The probes were checked on the WebSocket above; they may be stored.
        allowed[probeUser] = Set((1...probes).map { probeEvent($0).actionKey })
        let snapshot = try await StoreInspector.snapshot(harness.databasePath)
        progress("\(events.count) events published: \(acknowledged.count) acked, \(log.failed.count) failed (last: \(log.lastError ?? "-"))")
        checks.checkStore(snapshot, required: required, allowed: allowed)
        checks.checkDrained(drained)
        client.stop()
        await clientTask.value
        worker.stop()
        gateway.stop()
    }
}
