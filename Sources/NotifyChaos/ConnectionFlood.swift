import Dispatch
import Foundation
import ProcessSupport
import Synchronization

/// 5,000 connections opened at once: slowloris upgrades (silent, or a byte
/// a second), WebSockets of 49 users, 25 for one user capped at 20; then,
/// while they are open, 2 MiB frames and a legitimate client.
enum ConnectionFlood {
    enum Kind: Sendable, Equatable {
        /// Connects and sends nothing.
        case silent
        /// Sends an upgrade request one byte a second, never finishing it.
        case trickle
        /// A WebSocket with a valid token for `user`.
        case client(String)
    }

    struct Opened: Sendable {
        let kind: Kind
        let socket: RawSocket?
        /// `hello`, `close <code>`, or what went wrong.
        let outcome: String
    }

    static let capped = "capped"
    static let trickleRequest = Array("GET /ws?access_token=\(String(repeating: "x", count: 4_000)) HTTP/1.1\r\n".utf8)

    static func run(_ harness: Harness, _ checks: inout Checks) async throws {
        let worker = try await harness.startNotify("worker")
        let gateway = try await harness.startNotify("gateway")
        let port = try await gateway.waitForPort()
        try await Task.sleep(for: .seconds(1))
        let before = (rss: gateway.currentRSSKiB(), files: gateway.openFileCount())

        var plan: [Kind] = Array(repeating: .silent, count: 1_995) + Array(repeating: .trickle, count: 2_000)
        plan += (0..<49).flatMap { user in Array(repeating: Kind.client("c\(user)"), count: 20) }
        plan += Array(repeating: Kind.client(capped), count: 25)
        plan.shuffle()
        let connections = plan
        let tokens = Dictionary(uniqueKeysWithValues: Set(plan.compactMap { if case .client(let user) = $0 { user } else { nil } }).map { ($0, Tokens.valid(user: $0)) })
        progress("opening \(plan.count) connections from 20 threads: 1,995 silent, 2,000 trickling an upgrade, 1,005 WebSockets (25 for '\(capped)', capped at 20)")
        let flood = ContinuousClock.now
        let opened = await HTTPProbe.onThread { open(connections, port: port, tokens: tokens) }
        let openSeconds = seconds(ContinuousClock.now - flood)
        let peakFiles = gateway.openFileCount()
        progress(String(format: "opened in %.1f s; gateway has %d open files, RSS %d KiB", openSeconds, peakFiles, gateway.currentRSSKiB()))

        // While they are open: a legitimate client, and 2 MiB frames.
        let legit = await HTTPProbe.onThread { () -> (String, Double) in
            let started = ContinuousClock.now
            let outcome = handshake(port: port, token: Tokens.valid(user: "legit")).outcome
            return (outcome, seconds(ContinuousClock.now - started) * 1_000)
        }
        let health = try? await HTTPProbe.request(port: port, path: "/health")
        checks.add("with 5,000 connections open, a legitimate client connects (hello within 2 s) and /health answers 200",
                   String(format: "legitimate client: %@ after %.1f ms; /health %@", legit.0, legit.1, health.map { String($0.status) } ?? "no answer"),
                   legit.0 == "hello" && legit.1 < 2_000 && health?.status == 200)
        let oversize = await HTTPProbe.onThread { () -> [String] in
            (0..<10).map { index in
                let opened = handshake(port: port, token: Tokens.valid(user: "big\(index)"))
                guard let socket = opened.socket, opened.outcome == "hello" else { return "no hello: \(opened.outcome)" }
                socket.send(RawSocket.clientFrame(opcode: 1, payload: Array(repeating: UInt8(ascii: "a"), count: 2 << 20)))
                var close = "no close frame"
                _ = socket.drain(idleMilliseconds: 5_000) { frame in if let code = frame.closeCode { close = "close \(code)" } }
                return close
            }
        }
        var oversizeOutcomes: [String: Int] = [:]
        for outcome in oversize { oversizeOutcomes[outcome, default: 0] += 1 }
        checks.add("a 2 MiB frame (10 clients) → close 1009",
                   oversizeOutcomes.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "),
                   oversizeOutcomes["close 1009"] == 10)

        // Slowloris: every silent and trickling connection is closed by the
        // handshake timeout (10 s) although the trickling ones keep sending.
        let slowloris = opened.filter { !isClient($0.kind) }
        let closedAfter = await HTTPProbe.onThread { watch(slowloris, since: flood, limit: .seconds(20)) }
        let stillOpen = closedAfter.filter { $0 == nil }.count
        let times = closedAfter.compactMap { $0 }
        let failedToOpen = slowloris.filter { $0.socket == nil }.count
        checks.add("slowloris: every silent or trickling upgrade closed by the handshake timeout (10 s), none left open after 20 s",
                   String(format: "%d/%d closed, %d still open, %d not connected; closed %.1f–%.1f s after the flood began",
                          times.count, slowloris.count, stillOpen, failedToOpen, times.min() ?? 0, times.max() ?? 0),
                   stillOpen == 0 && failedToOpen == 0 && times.count == slowloris.count && (times.min() ?? 0) >= 9)

        // The WebSockets: 20 per user accepted and still open; the cap refused 5.
        let clients = opened.filter { isClient($0.kind) }
        var outcomes: [String: Int] = [:]
        var cappedOutcomes: [String: Int] = [:]
        var closedLater = 0
        for entry in clients {
            if entry.kind == Kind.client(capped) { cappedOutcomes[entry.outcome, default: 0] += 1 } else { outcomes[entry.outcome, default: 0] += 1 }
            if entry.outcome == "hello", entry.socket?.isClosedByPeer ?? true { closedLater += 1 }
        }
        checks.add("per-user cap: 25 connections for one user → 20 hello, 5 closed with 1008; the other 980 (20 each) all get hello and stay open",
                   "'\(capped)': \(cappedOutcomes.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")); others: \(outcomes.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")); \(closedLater) accepted ones closed since",
                   cappedOutcomes["hello"] == 20 && cappedOutcomes["close 1008"] == 5 && outcomes["hello"] == 980 && closedLater == 0)

        // Everything closed: the gateway gives its descriptors back.
        let peakRSS = gateway.currentRSSKiB()
        drop(opened)
        let after = await waitFor(timeout: .seconds(15)) { () -> Int? in
            let files = gateway.openFileCount()
            return files <= before.files + 10 ? files : nil
        } ?? gateway.openFileCount()
        let again = await HTTPProbe.onThread { handshake(port: port, token: Tokens.valid(user: "legit")).outcome }
        checks.add("after they close, the gateway's open files return to their level before the flood (±10) and it still serves",
                   "open files \(before.files) before, \(peakFiles) during, \(after) after; RSS \(before.rss) → \(peakRSS) KiB with them open (\((peakRSS - before.rss) / 1_024) MiB for 5,000); a new client: \(again); alive \(gateway.isRunning)",
                   after <= before.files + 10 && again == "hello" && gateway.isRunning)
        gateway.stop()
        worker.stop()
    }

    static func isClient(_ kind: Kind) -> Bool {
        if case .client = kind { return true }
        return false
    }

    /// Opens a WebSocket with `token` and reads its first frame: the
    /// socket (when connected) and `hello`, `close <code>` or what went wrong.
    static func handshake(port: Int, token: String) -> (socket: RawSocket?, outcome: String) {
        do {
            let socket = try RawSocket(port: port)
            let status = try socket.upgrade(path: "/ws?access_token=\(token)", port: port)
            guard status == 101 else { return (socket, "status \(status)") }
            guard let frame = socket.nextFrame(timeoutMilliseconds: 10_000) else { return (socket, "no frame") }
            if let code = frame.closeCode { return (socket, "close \(code)") }
            let type = ((try? JSONSerialization.jsonObject(with: Data(frame.payload))) as? [String: Any])?["type"] as? String
            return (socket, type ?? "unreadable frame")
        } catch {
            return (nil, error.description)
        }
    }

    /// Opens every planned connection from 20 threads; blocks.
    static func open(_ plan: [Kind], port: Int, tokens: [String: String]) -> [Opened] {
        let results = Mutex<[Opened]>([])
        DispatchQueue.concurrentPerform(iterations: 20) { slice in
            var mine: [Opened] = []
            for index in stride(from: slice, to: plan.count, by: 20) {
                let kind = plan[index]
                switch kind {
                case .silent, .trickle:
                    do {
                        let socket = try RawSocket(port: port)
                        if kind == .trickle { socket.send(Array(trickleRequest.prefix(1))) }
                        mine.append(Opened(kind: kind, socket: socket, outcome: "open"))
                    } catch {
                        mine.append(Opened(kind: kind, socket: nil, outcome: "\(error)"))
                    }
                case .client(let user):
                    let opened = handshake(port: port, token: tokens[user]!)
                    mine.append(Opened(kind: kind, socket: opened.socket, outcome: opened.outcome))
                }
            }
            results.withLock { $0 += mine }
        }
        return results.withLock { $0 }
    }

    /// Sends the trickling ones their next byte every second and records,
    /// for each connection, the seconds after `since` at which the gateway
    /// closed it (`nil`: still open at `limit`); blocks.
    static func watch(_ connections: [Opened], since: ContinuousClock.Instant, limit: Duration) -> [Double?] {
        var closedAt = [Double?](repeating: nil, count: connections.count)
        var remaining = Set(connections.indices.filter { connections[$0].socket != nil })
        var sentBytes = 1
        var nextTrickle = ContinuousClock.now + .seconds(1)
        while !remaining.isEmpty, ContinuousClock.now < since + limit {
            let indices = Array(remaining)
            var pollers = indices.map { pollfd(fd: connections[$0].socket!.fd, events: Int16(POLLIN), revents: 0) }
            _ = poll(&pollers, nfds_t(pollers.count), 100)
            let now = seconds(ContinuousClock.now - since)
            for (position, index) in indices.enumerated() where pollers[position].revents != 0 {
                if connections[index].socket!.isClosedByPeer {
                    closedAt[index] = now
                    remaining.remove(index)
                }
            }
            if ContinuousClock.now >= nextTrickle, sentBytes < trickleRequest.count {
                for index in remaining where connections[index].kind == .trickle {
                    connections[index].socket!.send([trickleRequest[sentBytes]])
                }
                sentBytes += 1
                nextTrickle += .seconds(1)
            }
        }
        return closedAt
    }

    /// Ends every connection.
    static func drop(_ opened: [Opened]) {
        for entry in opened { entry.socket?.hangUp() }
    }
}
