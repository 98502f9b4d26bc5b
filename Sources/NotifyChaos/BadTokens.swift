import Foundation
import ProcessSupport

/// 10,000 requests with bad tokens against a running gateway: every one
/// refused with 401, quietly, quickly, and without the gateway growing.
enum BadTokens {
    struct Outcome: Sendable {
        let kind: String
        let endpoint: String
        let status: Int
        let milliseconds: Double
        let jsonError: Bool
    }

    static func run(_ harness: Harness, _ checks: inout Checks) async throws {
        // Production logging: one JSON object per line, so levels are exact.
        let gateway = try await harness.startNotify("gateway", extra: ["ENVIRONMENT": "production", "ALLOWED_ORIGINS": "*", "LOG_LEVEL": "debug"])
        let port = try await gateway.waitForPort()
        let tokens = Tokens.bad(user: "victim")

        _ = await HTTPProbe.onThread { attack(port: port, tokens: tokens, count: 500) }
        try await Task.sleep(for: .seconds(1))
        let before = (rss: gateway.currentRSSKiB(), files: gateway.openFileCount(), logBytes: gateway.output.utf8.count)
        progress("warm-up done: gateway RSS \(before.rss) KiB, \(before.files) open files; sending 10,000 bad tokens")
        let outcomes = await HTTPProbe.onThread { attack(port: port, tokens: tokens, count: 10_000) }
        try await Task.sleep(for: .seconds(1))
        let after = (rss: gateway.currentRSSKiB(), files: gateway.openFileCount())

        let refused = outcomes.filter { $0.status == 401 && $0.jsonError }.count
        var others: [String: Int] = [:]
        for outcome in outcomes where outcome.status != 401 || !outcome.jsonError {
            others["\(outcome.kind) on \(outcome.endpoint): \(outcome.status)\(outcome.jsonError ? "" : " without a JSON error")", default: 0] += 1
        }
        checks.add("every bad token (alg none, HS512, bad signature, expired, no exp, 16 KiB, bad base64) → 401 with a JSON error, no upgrade",
                   "\(refused)/\(outcomes.count) refused\(others.isEmpty ? "" : "; others: " + others.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))",
                   refused == outcomes.count && outcomes.count == 10_000)

        let log = String(gateway.output.utf8.dropFirst(before.logBytes)) ?? ""
        var loud: [String: Int] = [:]
        var quiet: [String: Int] = [:]
        for line in log.split(separator: "\n") {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                loud["unparsed line", default: 0] += 1
                continue
            }
            let level = object["level"] as? String ?? "?"
            if ["trace", "debug"].contains(level) { quiet[level, default: 0] += 1 } else { loud["\(level): \(object["message"] as? String ?? "?")", default: 0] += 1 }
        }
        let leaked = tokens.filter { token in token.token.split(separator: ".").contains { $0.count >= 16 && log.contains($0) } }.map(\.name)
        checks.add("none logged at info or above; no token in the log",
                   "log lines during the attack: \(quiet.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")), \(loud.values.reduce(0, +)) at info or above\(loud.isEmpty ? "" : ": " + loud.map { "\($0.key) ×\($0.value)" }.joined(separator: "; ")); tokens in the log: \(leaked.isEmpty ? "none" : leaked.joined(separator: ", "))",
                   loud.isEmpty && leaked.isEmpty)

        let growth = after.rss - before.rss
        checks.add("gateway RSS and open files flat (RSS growth ≤ 4 MiB, fds ±5)",
                   "RSS \(before.rss) → \(after.rss) KiB (\(growth >= 0 ? "+" : "")\(growth)), open fds \(before.files) → \(after.files)",
                   growth <= 4 * 1_024 && abs(after.files - before.files) <= 5)

        let latencies = outcomes.map(\.milliseconds)
        let p99 = percentile(latencies, 0.99)
        checks.add("p99 reject latency ≤ 5 ms (connect to full response, one connection per request)",
                   String(format: "p50 %.2f ms, p99 %.2f ms, max %.2f ms", percentile(latencies, 0.5), p99, latencies.max() ?? 0),
                   p99 <= 5)

        let valid = try? await HTTPProbe.request(port: port, path: "/v1/notifications", headers: [("Authorization", "Bearer \(Tokens.valid(user: "victim"))")])
        checks.add("the gateway still serves a valid token", "GET /v1/notifications → \(valid.map { String($0.status) } ?? "no answer"); alive \(gateway.isRunning)",
                   valid?.status == 200 && gateway.isRunning)
        gateway.stop()
    }

    /// Sends `count` requests, cycling through the tokens and four ways of
    /// presenting them; blocks the calling thread.
    static func attack(port: Int, tokens: [(name: String, token: String)], count: Int) -> [Outcome] {
        let upgrade = HTTPProbe.webSocketUpgrade
        var outcomes: [Outcome] = []
        outcomes.reserveCapacity(count)
        let clock = ContinuousClock()
        for index in 0..<count {
            let (kind, token) = tokens[index % tokens.count]
            let (endpoint, path, headers): (String, String, [(String, String)]) = switch (index / tokens.count) % 4 {
            case 0: ("/v1/notifications (header)", "/v1/notifications", [("Authorization", "Bearer \(token)")])
            case 1: ("/ws (query)", "/ws?access_token=\(token)", upgrade)
            case 2: ("/v1/notifications (query)", "/v1/notifications?access_token=\(token)", [])
            default: ("/ws (header)", "/ws", upgrade + [("Authorization", "Bearer \(token)")])
            }
            let started = clock.now
            let reply = try? HTTPProbe.exchange(port: port, path: path, headers: headers)
            let elapsed = seconds(clock.now - started) * 1_000
            outcomes.append(Outcome(kind: kind, endpoint: endpoint, status: reply?.status ?? 0, milliseconds: elapsed,
                                    jsonError: reply?.json?["error"] != nil))
        }
        return outcomes
    }
}
