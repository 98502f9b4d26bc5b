import Foundation
import DynamoDBStore
import Gateway
import KeyValueStore
import NATS
import ProcessSupport
import Notifications
import SQLiteStore
import Synchronization
import Testing
import TestSupport

/// Signs test tokens the way the main API would.
enum TokenSigner {
    static func sign(secret: String, user: String) -> String {
        TokenVerifier(secret: secret).sign(user: user, expiresAt: Int64(Date().timeIntervalSince1970) + 600)
    }
}

/// The `notify` executable as users run it.
@Suite("notify command", .serialized)
struct NotifyCommandTests {
    /// The `notify` binary built next to this test bundle.
    static let executable: String = {
        let testBinary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: testBinary).deletingLastPathComponent()
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent("notify").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return "notify"
    }()

    static func environment(_ server: NATSServer?, data: TemporaryDirectory, _ extra: [String: String] = [:]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["NATS_URL"] = server?.url ?? "nats://127.0.0.1:1"
        environment["DATA_DIR"] = data.file("data")
        environment["NATS_STREAM_STORAGE"] = "memory"
        environment["NATS_ACK_WAIT"] = "2s"
        environment["LOG_LEVEL"] = "info"
        for (key, value) in extra { environment[key] = value }
        return environment
    }

    static func run(_ arguments: [String], environment: [String: String], in directory: TemporaryDirectory) async throws -> (status: Int32, output: String) {
        let process = try ChildProcess.spawn(executable, arguments: arguments, environment: environment, outputPath: directory.file("run-\(UUID().uuidString).log"))
        let status = try await process.wait(timeout: .seconds(30))
        return (status, process.output)
    }

    static let like = #"{"owner":"ana","trigger_user":"ben","action":1,"resource_type":"POST","resource_id":"p1","created_at":1765318000}"#

    // MARK: Fuzzing corpus

    /// Every input the fuzzers kept (Tests/Fuzz/corpus) replays through the
    /// same checks without libFuzzer: a regression test for what fuzzing found.
    @Test(arguments: [("EventFuzzer", "events"), ("TokenFuzzer", "tokens")])
    func theFuzzingCorpusReplaysCleanly(fuzzer: String, corpus: String) async throws {
        try await withTemporaryDirectory { directory in
            let executable = URL(fileURLWithPath: Self.executable).deletingLastPathComponent().appendingPathComponent(fuzzer).path
            let corpusPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fuzz/corpus/\(corpus)").path
            let files = try FileManager.default.contentsOfDirectory(atPath: corpusPath)
            #expect(files.count >= 10)
            let process = try ChildProcess.spawn(executable, arguments: [corpusPath], outputPath: directory.file("replay.log"))
            #expect(try await process.wait(timeout: .seconds(60)) == 0)
            #expect(process.output.contains("replayed \(files.count) inputs"))
        }
    }

    // MARK: Doctor

    @Test func doctorPassesAWorkingSetup() async throws {
        try await withTemporaryDirectory { directory in
            try await withNATSServer { server in
                let environment = Self.environment(server, data: directory, ["JWT_SECRET": String(repeating: "s", count: 32)])
                let (status, output) = try await Self.run(["doctor"], environment: environment, in: directory)
                #expect(status == 0, "\(output)")
                #expect(output.contains("ok    JetStream is enabled"))
                #expect(output.contains("All checks passed."))
                #expect(!output.contains("FAIL"))
            }
        }
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["CI"] == "true" || PythonServerProcess.canImport("aiosmtpd")))
    func doctorLogsInToTheSMTPServerWithoutSending() async throws {
        try await withTemporaryDirectory { directory in
            try await withNATSServer { server in
                let smtp = try await PythonServerProcess.start(
                    "smtp-server.py", arguments: ["--directory", directory.file("smtp"), "--username", "notify", "--password", "right"],
                    log: directory.file("smtp.log"), name: "the SMTP server")
                defer { smtp.stop() }
                let port = smtp.port
                func doctor(password: String) async throws -> (status: Int32, output: String) {
                    try await Self.run(["doctor", "--role", "dispatcher"], environment: Self.environment(server, data: directory, [
                        "JWT_SECRET": String(repeating: "s", count: 32), "DELIVERY_CHANNELS": "email",
                        "SMTP_URL": "smtp://notify:\(password)@localhost:\(port)", "SMTP_FROM": "notify@example.com",
                        "SMTP_CA_FILE": directory.file("smtp/cert.pem"),
                    ]), in: directory)
                }
                let good = try await doctor(password: "right")
                #expect(good.status == 0, "\(good.output)")
                #expect(good.output.contains("ok    SMTP: localhost:\(port) (starttls, login accepted)"), "\(good.output)")
                let bad = try await doctor(password: "wrong")
                #expect(bad.status == 1)
                #expect(bad.output.contains("FAIL  SMTP: localhost:\(port): the server answered AUTH PLAIN with 535"), "\(bad.output)")
                #expect(bad.output.contains("check the user and password in SMTP_URL"))
                #expect(!bad.output.contains("wrong"), "the password never appears")
                let received = (try? String(contentsOfFile: directory.file("smtp/messages.jsonl"), encoding: .utf8)) ?? ""
                #expect(received.isEmpty, "the doctor sends nothing")
            }
        }
    }

    @Test func doctorNamesEveryProblemInPlainWords() async throws {
        try await withTemporaryDirectory { directory in
            let notADirectory = directory.file("plain-file")
            #expect(FileManager.default.createFile(atPath: notADirectory, contents: Data()))
            var environment = Self.environment(nil, data: directory, ["JWT_SECRET": "too-short"])
            environment["DATA_DIR"] = notADirectory
            let (status, output) = try await Self.run(["doctor"], environment: environment, in: directory)
            #expect(status == 1)
            let failures = output.split(separator: "\n").filter { $0.hasPrefix("FAIL") }
            #expect(failures.count == 3, "\(output)")
            #expect(failures.contains { $0.contains("JWT_SECRET") && $0.contains("at least 32") })
            #expect(failures.contains { $0.contains("DATA_DIR") && $0.contains("not a directory") })
            #expect(failures.contains { $0.contains("NATS_URL") })
            #expect(output.contains("3 check(s) failed."))
        }
    }

    @Test func doctorSaysWhenJetStreamIsDisabled() async throws {
        try await withTemporaryDirectory { directory in
            let server = try await NATSServer.start(jetStream: false)
            defer { server.directory.remove() }
            let (status, output) = try await Self.run(["doctor", "--role", "worker"], environment: Self.environment(server, data: directory), in: directory)
            await server.stop()
            #expect(status == 1)
            #expect(output.contains("ok    NATS answers"))
            #expect(output.contains("FAIL  JetStream is enabled") && output.contains("-js"), "\(output)")
        }
    }

    // MARK: Configuration and start-up errors

    @Test func helpListsTheCommands() async throws {
        try await withTemporaryDirectory { directory in
            let (status, output) = try await Self.run(["--help"], environment: Self.environment(nil, data: directory), in: directory)
            #expect(status == 0)
            #expect(output.contains("worker") && output.contains("publish"))
            let workerHelp = try await Self.run(["worker", "--help"], environment: Self.environment(nil, data: directory), in: directory)
            #expect(workerHelp.status == 0)
            #expect(workerHelp.output.contains("NATS_URL") && workerHelp.output.contains("DATA_DIR"))
        }
    }

    @Test(arguments: [
        ("NATS_ACK_WAIT", "3x"), ("NATS_MAX_DELIVER", "zero"), ("NATS_URL", "http://example.com"), ("NATS_SUBJECT", "a..b"),
        ("USER_SUBJECT_PREFIX", "users.>"), ("LOG_LEVEL", "loud"), ("ENVIRONMENT", "staging"), ("NOTIF_TABLE_NAME", "x"),
        ("SQLITE_SYNCHRONOUS", "off"), ("NATS_JETSTREAM", "maybe"), ("NATS_CREDS_FILE", "/nonexistent/user.creds"),
        ("NATS_BACKOFF", "1s,5s,10s,20s,40s"), ("NOTIF_TTL_DAYS", "-1"), ("NOTIF_TTL_DAYS", "90d"),
        ("READ_TTL_DAYS", "0"), ("READ_TTL_DAYS", "91"), ("AGGREGATE_WINDOW", "an hour"),
        ("DELIVERY_CHANNELS", "sms"), ("TEMPLATES_DIR", "/nonexistent/templates"),
        ("APP_URL", "ftp://app.example.com"), ("DELIVERY_MAX_ATTEMPTS", "0"), ("DELIVERY_BACKOFF", "soon"),
    ])
    func aBadSettingIsAOneLineErrorNamingIt(variable: String, value: String) async throws {
        try await withTemporaryDirectory { directory in
            let (status, output) = try await Self.run(["worker"], environment: Self.environment(nil, data: directory, [variable: value]), in: directory)
            #expect(status == 2)
            let lines = output.split(separator: "\n")
            #expect(lines.count == 1)
            #expect(lines.first?.hasPrefix("notify: error: ") == true)
            #expect(output.contains(variable))
        }
    }

    @Test func theGatewayNeedsAStrongSecretAndInProductionItsOrigins() async throws {
        try await withTemporaryDirectory { directory in
            let missing = try await Self.run(["gateway"], environment: Self.environment(nil, data: directory), in: directory)
            #expect(missing.status == 2)
            #expect(missing.output.contains("JWT_SECRET is required"))
            let short = try await Self.run(["serve"], environment: Self.environment(nil, data: directory, ["JWT_SECRET": "short"]), in: directory)
            #expect(short.status == 2)
            #expect(short.output.contains("JWT_SECRET is 5 bytes"))
            let production = try await Self.run(["gateway"], environment: Self.environment(nil, data: directory, [
                "JWT_SECRET": String(repeating: "s", count: 32), "ENVIRONMENT": "production",
            ]), in: directory)
            #expect(production.status == 2)
            #expect(production.output.contains("ALLOWED_ORIGINS is required in production"))
        }
    }

    /// Email and Web Push settings that are missing or wrong, each with
    /// the message that says what to fix.
    static let badChannelSettings: [(environment: [String: String], message: String)] = {
        let email = ["DELIVERY_CHANNELS": "email", "JWT_SECRET": String(repeating: "s", count: 32)]
        let smtp = email.merging(["SMTP_URL": "smtp://user:pa%40ss@smtp.example.com:587"]) { $1 }
        let webpush = ["DELIVERY_CHANNELS": "webpush"]
        return [
            (email, "SMTP_URL is required"),
            (email.merging(["SMTP_URL": "http://smtp.example.com"]) { $1 }, "SMTP_URL must look like"),
            (email.merging(["SMTP_URL": "smtp://user@smtp.example.com"]) { $1 }, "both a user and a password"),
            (smtp.merging(["SMTP_TLS": "none"]) { $1 }, "in the clear"),
            (smtp.merging(["SMTP_TLS": "ssl"]) { $1 }, "SMTP_TLS='ssl' must be starttls, tls or none"),
            (smtp.merging(["SMTP_CA_FILE": "/nonexistent/ca.pem"]) { $1 }, "SMTP_CA_FILE"),
            (smtp, "SMTP_FROM is required"),
            (smtp.merging(["SMTP_FROM": "notify"]) { $1 }, "SMTP_FROM='notify' must be"),
            (smtp.merging(["SMTP_FROM": "notify@example.com", "JWT_SECRET": ""]) { $1 }, "UNSUBSCRIBE_SECRET"),
            (smtp.merging(["SMTP_FROM": "notify@example.com", "PUBLIC_URL": "notify.example.com"]) { $1 }, "PUBLIC_URL"),
            (webpush, "VAPID_PRIVATE_KEY is required"),
            (webpush.merging(["VAPID_PRIVATE_KEY": "AAAA"]) { $1 }, "32-byte P-256 private key"),
            (webpush.merging(["VAPID_PRIVATE_KEY": "jmCMoMQi9S1d1s3lyQj3eDFXWUhH8m1vtTrAbZSkmM8"]) { $1 }, "VAPID_SUBJECT is required"),
        ]
    }()

    @Test func badEmailAndWebPushSettingsAreOneLineErrorsSayingWhatToFix() async throws {
        try await withTemporaryDirectory { directory in
            for (extra, message) in Self.badChannelSettings {
                var environment = Self.environment(nil, data: directory, extra)
                if extra["JWT_SECRET"] == "" { environment["JWT_SECRET"] = nil }
                let (status, output) = try await Self.run(["dispatcher"], environment: environment, in: directory)
                #expect(status == 2, "\(extra)")
                #expect(output.split(separator: "\n").count == 1, "\(output)")
                #expect(output.contains(message), "\(extra): \(output)")
                #expect(!output.contains("pa%40ss") && !output.contains("pa@ss"), "a password never appears in an error")
            }
        }
    }

    @Test func webpushKeysPrintsAKeyPairTheGatewayServes() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let (status, output) = try await Self.run(["webpush-keys"], environment: Self.environment(nil, data: directory), in: directory)
                #expect(status == 0)
                var values: [String: String] = [:]
                for line in output.split(separator: "\n") {
                    let pair = line.split(separator: "=", maxSplits: 1)
                    if pair.count == 2 { values[String(pair[0])] = String(pair[1]) }
                }
                let privateKey = try #require(values["VAPID_PRIVATE_KEY"])
                let publicKey = try #require(values["VAPID_PUBLIC_KEY"])
                #expect(privateKey.count == 43 && publicKey.count == 87)
                let port = try LoopbackSocket.freePort()
                let gateway = try ChildProcess.spawn(Self.executable, arguments: ["gateway", "--port", String(port)], environment: Self.environment(server, data: directory, [
                    "JWT_SECRET": String(repeating: "s", count: 32), "VAPID_PRIVATE_KEY": privateKey,
                ]), outputPath: directory.file("gateway.log"))
                try await gateway.waitForOutput(containing: "gateway listening")
                let response = try await httpRequest(port: port, "GET", "/v1/channels/webpush/key")
                #expect(response.json["public_key"] as? String == publicKey)
                gateway.signal(SIGTERM)
                #expect(try await gateway.wait(timeout: .seconds(10)) == 0)
            }
        }
    }

    @Test func serveRunsWorkerDispatcherAndGatewayAndStopsWithStatus0OnSIGTERM() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let serve = try ChildProcess.spawn(Self.executable, arguments: ["serve", "--port", "0"], environment: Self.environment(server, data: directory, [
                    "JWT_SECRET": String(repeating: "s", count: 32), "DELIVERY_CHANNELS": "email,webpush,webhook",
                    "SMTP_URL": "smtp://127.0.0.1:1", "SMTP_FROM": "Notify <notify@example.com>",
                    "VAPID_PRIVATE_KEY": "jmCMoMQi9S1d1s3lyQj3eDFXWUhH8m1vtTrAbZSkmM8", "VAPID_SUBJECT": "mailto:ops@example.com",
                ]), outputPath: directory.file("serve.log"))
                try await serve.waitForOutput(containing: "gateway listening")
                try await serve.waitForOutput(containing: "worker running")
                try await serve.waitForOutput(containing: "dispatcher running")
                serve.signal(SIGTERM)
                #expect(try await serve.wait(timeout: .seconds(10)) == 0)
                #expect(serve.output.contains("worker stopped"))
                #expect(serve.output.contains("dispatcher stopped"))
            }
        }
    }

    /// `/metrics` after known traffic: the counts match what was sent.
    @Test func metricsCountWhatHappened() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let environment = Self.environment(server, data: directory, ["JWT_SECRET": String(repeating: "s", count: 32)])
                let serve = try ChildProcess.spawn(Self.executable, arguments: ["serve", "--port", "0", "--host", "127.0.0.1"], environment: environment, outputPath: directory.file("serve.log"))
                try await serve.waitForOutput(containing: "gateway listening")
                try await serve.waitForOutput(containing: "worker running")
                let portText = serve.output.split(separator: "\n").first { $0.contains("gateway listening") }?.split(separator: "=").last ?? ""
                let port = try #require(Int(portText.prefix { $0.isNumber }))

                func event(owner: String, trigger: String, resource: String) -> String {
                    #"{"owner":"\#(owner)","trigger_user":"\#(trigger)","action":1,"resource_type":"POST","resource_id":"\#(resource)","created_at":\#(Int(Date().timeIntervalSince1970))}"#
                }
                let events = [
                    event(owner: "ana", trigger: "ben", resource: "p1"),
                    event(owner: "ana", trigger: "ben", resource: "p2"),
                    event(owner: "cy", trigger: "ben", resource: "p1"),
                    event(owner: "ana", trigger: "ben", resource: "p1"),  // deduplicated
                    event(owner: "ben", trigger: "ben", resource: "p1"),  // self-notification
                    #"{"owner":"ana","action":1}"#,  // rejected: missing_field
                ]
                for body in events {
                    #expect(try await Self.run(["publish", "notifications.post.like", body], environment: environment, in: directory).status == 0)
                }
                #expect(try await httpRequest(port: port, "GET", "/v1/notifications").status == 401)
                #expect(try await httpRequest(port: port, "GET", "/health").status == 200)

                var samples: [String: Double] = [:]
                let settled = await eventually {
                    guard let text = try? await httpRequest(port: port, "GET", "/metrics").body else { return false }
                    samples = Self.prometheusSamples(text)
                    return samples[#"notify_events_total{result="self_notification"}"#] == 1
                        && samples[#"notify_events_rejected_total{reason="missing_field"}"#] == 1
                        && samples[#"notify_events_total{result="stored"}"#] == 3
                        && samples[#"notify_events_total{result="deduplicated"}"#] == 1
                }
                #expect(settled, "\(samples.filter { $0.key.hasPrefix("notify_events") })")
                #expect(samples["notify_events_received_total"] == 6)
                #expect(samples["notify_dlq_published_total"] == 1)
                #expect(samples["notify_user_messages_published_total"] == 3)
                #expect(samples[#"notify_auth_failures_total{reason="missing"}"#] == 1)
                #expect(samples["notify_nats_connected"] == 1)
                #expect(samples["notify_jetstream_consumer_pending"] == 0)
                #expect(samples["notify_outbox_batches"] != nil)
                #expect(samples[#"notify_http_request_duration_seconds_count{method="GET",route="/health",status="200"}"#] == 1)
                #expect(samples[#"notify_http_request_duration_seconds_count{method="GET",route="/v1/notifications",status="401"}"#] == 1)
                serve.signal(SIGTERM)
                #expect(try await serve.wait(timeout: .seconds(10)) == 0)
            }
        }
    }

    /// A worker alone serves /health and /metrics on METRICS_PORT.
    @Test func aWorkerServesHealthAndMetricsOnMetricsPort() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let environment = Self.environment(server, data: directory, ["METRICS_PORT": "0", "HOST": "127.0.0.1"])
                let worker = try ChildProcess.spawn(Self.executable, arguments: ["worker"], environment: environment, outputPath: directory.file("worker.log"))
                try await worker.waitForOutput(containing: "health and metrics listening")
                try await worker.waitForOutput(containing: "worker running")
                let portText = worker.output.split(separator: "\n").first { $0.contains("health and metrics listening") }?.split(separator: "=").last ?? ""
                let port = try #require(Int(portText.prefix { $0.isNumber }))
                #expect(try await Self.run(["publish", "notifications.post.like", Self.like], environment: environment, in: directory).status == 0)

                let health = try await httpRequest(port: port, "GET", "/health")
                #expect(health.status == 200)
                #expect(health.body.contains(#""consumer":{"stream":"NOTIFICATIONS","name":"notification-worker""#))
                #expect(!health.body.contains("websockets"))
                var samples: [String: Double] = [:]
                #expect(await eventually {
                    guard let text = try? await httpRequest(port: port, "GET", "/metrics").body else { return false }
                    samples = Self.prometheusSamples(text)
                    return samples[#"notify_events_total{result="stored"}"#] == 1
                })
                #expect(samples["notify_nats_connected"] == 1)
                #expect(try await httpRequest(port: port, "GET", "/v1/notifications").status == 404)
                worker.signal(SIGTERM)
                #expect(try await worker.wait(timeout: .seconds(10)) == 0)
            }
        }
    }

    /// `name{label="value",…} number` lines, labels sorted by name.
    static func prometheusSamples(_ text: String) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            var key = String(line[..<space])
            if let open = key.firstIndex(of: "{"), key.hasSuffix("}") {
                let labels = key[key.index(after: open)..<key.index(before: key.endIndex)].split(separator: ",").sorted()
                key = String(key[..<open]) + "{" + labels.joined(separator: ",") + "}"
            }
            samples[key] = value
        }
        return samples
    }

    /// Tokens in headers and query strings, valid and not, never reach the
    /// logs, even at trace level.
    @Test func tokensAndQueryStringsNeverAppearInTheLogs() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let secret = String(repeating: "s", count: 32)
                let serve = try ChildProcess.spawn(Self.executable, arguments: ["serve", "--port", "0", "--host", "127.0.0.1"], environment: Self.environment(server, data: directory, [
                    "JWT_SECRET": secret, "LOG_LEVEL": "trace",
                ]), outputPath: directory.file("serve.log"))
                try await serve.waitForOutput(containing: "gateway listening")
                let portText = serve.output.split(separator: "\n").first { $0.contains("gateway listening") }?.split(separator: "=").last ?? ""
                let port = try #require(Int(portText.prefix { $0.isNumber }))
                let token = TokenSigner.sign(secret: secret, user: "ana")
                let forged = token.dropLast(6) + "AAAAAA"
                _ = try await httpRequest(port: port, "GET", "/v1/notifications?limit=5&marker=query-marker-123", headers: [("Authorization", "Bearer \(token)")])
                _ = try await httpRequest(port: port, "GET", "/v1/notifications?access_token=\(forged)&marker=query-marker-456")
                _ = try await httpRequest(port: port, "GET", "/ws?access_token=\(forged)", headers: [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
                _ = try await httpRequest(port: port, "GET", "/v1/notifications/stream?access_token=\(forged)")
                serve.signal(SIGTERM)
                #expect(try await serve.wait(timeout: .seconds(10)) == 0)
                let log = serve.output
                #expect(log.contains("gateway listening"), "the log was captured")
                for secretText in [String(token), String(forged), "query-marker-123", "query-marker-456", secret] {
                    #expect(!log.contains(secretText), "\(secretText.prefix(12))… leaked into the logs")
                }
                // No part of a token either (its signature is the secret part).
                #expect(!log.contains(String(token.split(separator: ".")[2])))
            }
        }
    }

    @Test func unreachableNATSIsAOneLineErrorAndExitStatus1() async throws {
        try await withTemporaryDirectory { directory in
            let (status, output) = try await Self.run(["worker"], environment: Self.environment(nil, data: directory), in: directory)
            #expect(status == 1)
            #expect(output.split(separator: "\n").count == 1)
            #expect(output.contains("NATS_URL") && output.contains("127.0.0.1:1"))
        }
    }

    /// STORE=dynamodb end to end: a missing table is a one-line error that
    /// names the fix, `store create-table` is safe to repeat, and `serve`
    /// stores events in the table and serves them from it.
    @Test(.enabled(if: DynamoDBEmulator.isEnabled))
    func createTableIsSafeToRepeatAndServeRunsOnDynamoDB() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let configuration = try await DynamoDBEmulator.configuration(tablePrefix: "command")
                let secret = String(repeating: "s", count: 32)
                let environment = Self.environment(server, data: directory, [
                    "JWT_SECRET": secret, "STORE": "dynamodb", "DYNAMODB_ENDPOINT": configuration.endpoint, "AWS_REGION": "us-east-1",
                    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "NOTIF_TABLE_NAME": configuration.tableName,
                ])
                let missing = try await Self.run(["worker"], environment: environment, in: directory)
                #expect(missing.status == 1)
                #expect(missing.output.split(separator: "\n").count == 1)
                #expect(missing.output.contains("notify store create-table"), "\(missing.output)")

                let first = try await Self.run(["store", "create-table"], environment: environment, in: directory)
                #expect(first.status == 0)
                #expect(first.output.contains("created table '\(configuration.tableName)'; turned on TTL for 'expires_at'"), "\(first.output)")
                let again = try await Self.run(["store", "create-table"], environment: environment, in: directory)
                #expect(again.status == 0)
                #expect(again.output.contains("already exists; TTL already on"), "\(again.output)")
                let doctor = try await Self.run(["doctor", "--role", "worker"], environment: environment, in: directory)
                #expect(doctor.output.contains("ok    store: DynamoDB table \(configuration.tableName)"), "\(doctor.output)")

                let serve = try ChildProcess.spawn(
                    Self.executable, arguments: ["serve", "--port", "0", "--host", "127.0.0.1"], environment: environment,
                    outputPath: directory.file("serve.log"))
                try await serve.waitForOutput(containing: "gateway listening")
                try await serve.waitForOutput(containing: "worker running")
                #expect(serve.output.contains("store=dynamodb"))
                let portText = serve.output.split(separator: "\n").first { $0.contains("gateway listening") }?.split(separator: "=").last ?? ""
                let port = try #require(Int(portText.prefix { $0.isNumber }))
                #expect(try await Self.run(["publish", "notifications.post.like", Self.like], environment: environment, in: directory).status == 0)
                let token = TokenSigner.sign(secret: secret, user: "ana")
                let stored = await eventually {
                    let response = try? await httpRequest(port: port, "GET", "/v1/notifications", headers: [("Authorization", "Bearer \(token)")])
                    return response?.status == 200 && response?.body.contains(#""resource_id":"p1""#) == true
                }
                #expect(stored)
                serve.signal(SIGTERM)
                #expect(try await serve.wait(timeout: .seconds(10)) == 0)
                await DynamoDBEmulator.deleteTable(configuration)
            }
        }
    }

    @Test func aForeignFileInDataDirIsRefusedAndKept() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                try FileManager.default.createDirectory(atPath: directory.file("data"), withIntermediateDirectories: true)
                let path = directory.file("data/notify.sqlite")
                try Data("definitely not sqlite, but long enough to look like a header........................................".utf8).write(to: URL(fileURLWithPath: path))
                let before = try Data(contentsOf: URL(fileURLWithPath: path))
                let (status, output) = try await Self.run(["worker"], environment: Self.environment(server, data: directory), in: directory)
                #expect(status == 1)
                #expect(output.contains("not a readable notify store"))
                #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
            }
        }
    }

    // MARK: publish

    @Test func publishPrintsTheJetStreamAckAndWarnsAboutEventsTheWorkerWouldReject() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
                let jetStream = try JetStream(connection: connection)
                _ = try await jetStream.ensureStream(StreamConfiguration(name: "NOTIFICATIONS", subjects: ["notifications.>"], storage: .memory))
                let environment = Self.environment(server, data: directory)
                let first = try await Self.run(["publish", "notifications.post.like", Self.like], environment: environment, in: directory)
                #expect(first.status == 0)
                #expect(first.output.trimmingCharacters(in: .whitespacesAndNewlines) == #"{"stream":"NOTIFICATIONS","seq":1,"duplicate":false}"#)

                let stdinFile = directory.file("event.json")
                try Data("{\"owner\":\"a.b\"}".utf8).write(to: URL(fileURLWithPath: stdinFile))
                let viaStdin = try await Self.runWithStdin(["publish", "notifications.post.like"], stdin: stdinFile, environment: environment, in: directory)
                #expect(viaStdin.status == 0)
                #expect(viaStdin.output.contains("warning: the worker will dead-letter this event (missing_field"))
                #expect(viaStdin.output.contains(#""seq":2"#))

                let nowhere = try await Self.run(["publish", "elsewhere.thing", "{}"], environment: environment, in: directory)
                #expect(nowhere.status == 1)
                #expect(nowhere.output.contains("no JetStream stream captures this subject"))
                let core = try await Self.run(["publish", "--core", "elsewhere.thing", "{}"], environment: environment, in: directory)
                #expect(core.status == 0)
                let bad = try await Self.run(["publish", "not a subject", "{}"], environment: environment, in: directory)
                #expect(bad.status == 2)
                #expect(try await jetStream.streamInfo("NOTIFICATIONS")?.messages == 2)
                await connection.close()
            }
        }
    }

    @Test func subscribePrintsMessagesWithTheirSubjectAndHeaders() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let listener = try ChildProcess.spawn(Self.executable, arguments: ["subscribe", "users.>", "--count", "2"], environment: Self.environment(server, data: directory), outputPath: directory.file("subscribe.log"))
                try await listener.waitForOutput(containing: "listening on users.>")
                let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
                try connection.publish("users.ana.notifications", payload: Array(#"{"type":"notification.deleted","id":"X"}"#.utf8))
                try connection.publish("users.ben.notifications", payload: Array("{}".utf8), headers: ["Notify-Error": "none"])
                try await connection.flush()
                #expect(try await listener.wait(timeout: .seconds(10)) == 0)
                #expect(listener.output.contains(#"[users.ana.notifications] {"type":"notification.deleted","id":"X"}"#))
                #expect(listener.output.contains("[users.ben.notifications] Notify-Error=none {}"))
                await connection.close()
            }
        }
    }

    static func runWithStdin(_ arguments: [String], stdin: String, environment: [String: String], in directory: TemporaryDirectory) async throws -> (status: Int32, output: String) {
        let script = "exec \"$0\" \"$@\" < " + stdin
        let process = try ChildProcess.spawn("/bin/sh", arguments: ["-c", script, executable] + arguments, environment: environment, outputPath: directory.file("run-\(UUID().uuidString).log"))
        let status = try await process.wait(timeout: .seconds(30))
        return (status, process.output)
    }

    // MARK: Running and crashing

    /// `notify dlq`: list and filter by reason, show headers and body,
    /// replay through validation (a fixed event is stored, a still-bad
    /// one dead-lettered again), refuse an unknown sequence, purge.
    @Test func deadLettersAreListedShownReplayedAndPurged() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let environment = Self.environment(server, data: directory)
                let worker = try ChildProcess.spawn(Self.executable, arguments: ["worker"], environment: environment, outputPath: directory.file("worker.log"))
                try await worker.waitForOutput(containing: "worker running")
                let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
                let jetStream = try JetStream(connection: connection)
                let pushed = Mutex(0)
                let users = try connection.subscribe("users.ana.notifications") { _ in pushed.withLock { $0 += 1 } }
                try await connection.flush()
                // Rejected on sight by the worker: no resource_id.
                _ = try await jetStream.publish("notifications.post.like", payload: Array(#"{"owner":"ana","trigger_user":"ben","action":1,"resource_type":"POST","created_at":1765318000}"#.utf8))
                #expect(try await eventually { try await jetStream.streamInfo("NOTIFICATIONS_DLQ")?.messages == 1 })
                // A good event as the worker dead-letters it after a store failure.
                _ = try await jetStream.publish("dlq.notifications.post.like", payload: Array(Self.like.utf8), headers: ["Notify-Error": "store_failed", "Notify-Attempts": "5"])
                #expect(try await eventually { try await jetStream.streamInfo("NOTIFICATIONS_DLQ")?.messages == 2 })

                let list = try await Self.run(["dlq", "list"], environment: environment, in: directory)
                #expect(list.status == 0)
                let lines = list.output.split(separator: "\n").filter { $0.hasPrefix("{") }
                #expect(lines.count == 2)
                #expect(lines.first?.contains(#""seq":1,"#) == true && lines.first?.contains(#""subject":"notifications.post.like","reason":"missing_field","attempts":1"#) == true)
                #expect(lines.last?.contains(#""seq":2,"#) == true && lines.last?.contains(#""reason":"store_failed","attempts":5"#) == true)
                let failedOnly = try await Self.run(["dlq", "list", "--reason", "store_failed"], environment: environment, in: directory)
                #expect(failedOnly.output.split(separator: "\n").filter { $0.hasPrefix("{") }.count == 1)

                let show = try await Self.run(["dlq", "show", "2"], environment: environment, in: directory)
                #expect(show.status == 0)
                #expect(show.output.contains(#""Notify-Error":"store_failed""#))
                #expect(show.output.contains(#""body":"{\"owner\":\"ana\""#))

                let replay = try await Self.run(["dlq", "replay", "2", "1"], environment: environment, in: directory)
                #expect(replay.status == 0)
                #expect(replay.output.contains(#"{"seq":2,"subject":"notifications.post.like","stream":"NOTIFICATIONS""#))
                // The fixed event is stored and pushed; the bad one comes back as sequence 3.
                #expect(await eventually { pushed.withLock { $0 } == 1 })
                #expect(try await eventually { try await jetStream.message(stream: "NOTIFICATIONS_DLQ", sequence: 3)?.message.headers["Notify-Error"] == "missing_field" })
                #expect(try await jetStream.streamInfo("NOTIFICATIONS_DLQ")?.messages == 1)

                let unknown = try await Self.run(["dlq", "replay", "99"], environment: environment, in: directory)
                #expect(unknown.status == 2)
                #expect(unknown.output.contains("no dead letter 99 in NOTIFICATIONS_DLQ"))
                let neither = try await Self.run(["dlq", "replay"], environment: environment, in: directory)
                #expect(neither.status != 0)

                let young = try await Self.run(["dlq", "purge", "--older-than", "1h"], environment: environment, in: directory)
                #expect(young.output.contains(#"{"purged":0,"kept":1}"#))
                let all = try await Self.run(["dlq", "purge", "--all"], environment: environment, in: directory)
                #expect(all.output.contains(#"{"purged":1,"kept":0}"#))
                users.unsubscribe()
                await connection.close()
                worker.signal(SIGTERM)
                #expect(try await worker.wait(timeout: .seconds(10)) == 0)
            }
        }
    }

    @Test func sigtermStopsTheWorkerWithStatus0() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let worker = try ChildProcess.spawn(Self.executable, arguments: ["worker"], environment: Self.environment(server, data: directory), outputPath: directory.file("worker.log"))
                try await worker.waitForOutput(containing: "worker running")
                worker.signal(SIGTERM)
                #expect(try await worker.wait(timeout: .seconds(10)) == 0)
                #expect(worker.output.contains("worker stopped"))
            }
        }
    }

    /// Production logs are one JSON object per line; a rejected event is
    /// logged once, at warning, with its reason and never its body.
    @Test func productionLogsAreJSONLinesAndARejectedEventIsLoggedOnceWithoutItsBody() async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let worker = try ChildProcess.spawn(Self.executable, arguments: ["worker"], environment: Self.environment(server, data: directory, ["ENVIRONMENT": "production"]), outputPath: directory.file("worker.log"))
                try await worker.waitForOutput(containing: "worker running")
                let secretBody = #"{"owner":"ana","trigger_user":"ben","action":1,"resource_type":"POST","resource_id":"body-marker-7f3a","created_at":"yesterday"}"#
                let published = try await Self.run(["publish", "notifications.post.like", secretBody], environment: Self.environment(server, data: directory), in: directory)
                #expect(published.status == 0)
                try await worker.waitForOutput(containing: "event rejected")
                worker.signal(SIGTERM)
                #expect(try await worker.wait(timeout: .seconds(10)) == 0)

                let lines = worker.output.split(separator: "\n")
                #expect(lines.count >= 3)
                var rejections: [[String: Any]] = []
                for line in lines {
                    let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                    #expect(object != nil, "not a JSON object: \(line)")
                    guard let object else { continue }
                    for field in ["timestamp", "level", "message", "label"] { #expect(object[field] is String, "\(field) missing in \(line)") }
                    if object["message"] as? String == "event rejected" { rejections.append(object) }
                }
                #expect(rejections.count == 1)
                #expect(rejections.first?["level"] as? String == "warning")
                #expect(rejections.first?["reason"] as? String == "invalid_field")
                #expect(rejections.first?["subject"] as? String == "notifications.post.like")
                #expect(!worker.output.contains("body-marker-7f3a"))
            }
        }
    }

    /// Kill the worker between commit and ack (and between publish and ack):
    /// after a restart the event is stored once, its message is published
    /// once, and nothing is left pending.
    @Test(arguments: ["after-commit", "after-publish"])
    func aWorkerKilledBeforeItsAckLosesNothingAndDuplicatesNothing(crashPoint: String) async throws {
        try await withNATSServer { server in
            try await withTemporaryDirectory { directory in
                let observer = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
                let users = try observer.subscribe("users.>")
                try await observer.flush()
                let environment = Self.environment(server, data: directory)

                let doomed = try ChildProcess.spawn(Self.executable, arguments: ["worker"], environment: Self.environment(server, data: directory, ["NOTIFY_TEST_CRASH_POINT": crashPoint]), outputPath: directory.file("doomed.log"))
                try await doomed.waitForOutput(containing: "worker running")
                let published = try await Self.run(["publish", "notifications.post.like", Self.like], environment: environment, in: directory)
                #expect(published.status == 0)
                #expect(try await doomed.wait(timeout: .seconds(20)) == 128 + SIGKILL)
                #expect(doomed.output.contains("crashing on purpose"))

                let survivor = try ChildProcess.spawn(Self.executable, arguments: ["worker"], environment: environment, outputPath: directory.file("survivor.log"))
                try await survivor.waitForOutput(containing: "worker running")
                // AckWait is 2 s: wait until the redelivery (consumer sequence 2)
                // was made and acknowledged.
                let jetStream = try JetStream(connection: observer)
                let drained = await eventually(timeout: .seconds(15)) {
                    guard let info = try? await jetStream.consumerInfo(stream: "NOTIFICATIONS", name: "notification-worker") else { return false }
                    return info.numPending == 0 && info.numAckPending == 0 && info.ackFloorConsumerSequence >= 2
                }
                #expect(drained)
                try await Task.sleep(for: .milliseconds(300))
                users.unsubscribe()
                var bodies: [String] = []
                for await message in users { bodies.append(String(decoding: message.payload, as: UTF8.self)) }
                let created = bodies.filter { $0.contains("notification.created") }
                if crashPoint == "after-commit" {
                    #expect(created.count == 1, "published once, from the outbox the crash left")
                    #expect(survivor.output.contains("published an outbox left from before"))
                } else {
                    // Published before the crash; the outbox row was still
                    // there, so the survivor may publish it again: per-user
                    // messages are at-least-once, repeats carry the same id.
                    #expect((1...2).contains(created.count))
                    #expect(Set(created).count == 1, "a repeat is the same message")
                }
                survivor.signal(SIGTERM)
                #expect(try await survivor.wait(timeout: .seconds(10)) == 0)

                let database = try await SQLiteDatabase.open(.init(path: directory.file("data/notify.sqlite")))
                let repository = NotificationRepository(store: try await SQLiteKeyValueStore(database: database, tableName: "notifications"))
                #expect(try await repository.feed(owner: "ana", limit: 10).items.count == 1)
                #expect(try await repository.unreadCount(owner: "ana") == 1)
                #expect(try await repository.pendingOutboxes().isEmpty)
                await database.close()
                await observer.close()
            }
        }
    }
}
