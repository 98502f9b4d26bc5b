import Foundation

/// A real `nats-server` with JetStream, on a random loopback port, storing
/// its data in its own temp directory.
public struct NATSServer: Sendable {
    public let process: ChildProcess
    public let port: Int
    public let directory: TemporaryDirectory

    /// `nats://127.0.0.1:<port>`.
    public var url: String { "nats://127.0.0.1:\(port)" }

    /// Starts a server; `port` 0 picks a free one.
    public static func start(port: Int = 0, directory: TemporaryDirectory? = nil, jetStream: Bool = true) async throws -> NATSServer {
        let directory = try directory ?? TemporaryDirectory(prefix: "nats-server")
        let log = directory.file("server-\(UUID().uuidString.prefix(8)).log")
        let process = try ChildProcess.spawn(
            "nats-server",
            arguments: (jetStream ? ["-js"] : []) + ["-a", "127.0.0.1", "-p", port == 0 ? "-1" : String(port), "-sd", directory.file("jetstream")],
            outputPath: log
        )
        let marker = "Listening for client connections on "
        do {
            try await process.waitForOutput(containing: "Server is ready")
        } catch {
            await process.kill()
            throw error
        }
        guard let line = process.output.split(separator: "\n").first(where: { $0.contains(marker) }),
              let portText = line.split(separator: ":").last,
              let found = Int(portText.trimmingCharacters(in: .whitespaces))
        else {
            await process.kill()
            throw ChildProcessError(message: "cannot read the port from nats-server's log:\n\(process.output)")
        }
        return NATSServer(process: process, port: found, directory: directory)
    }

    /// Stops the server (SIGTERM, then SIGKILL) and keeps its data.
    public func stop() async {
        process.signal(SIGTERM)
        if (try? await process.wait(timeout: .seconds(10))) == nil {
            await process.kill()
        }
    }

    /// Starts a new server on the same port with the same data.
    public func restarted() async throws -> NATSServer {
        try await NATSServer.start(port: port, directory: directory)
    }
}

/// Runs `body` against a fresh `nats-server -js`, stopped and removed after.
public func withNATSServer<T>(_ body: (NATSServer) async throws -> T) async throws -> T {
    let server = try await NATSServer.start()
    do {
        let result = try await body(server)
        await server.stop()
        server.directory.remove()
        return result
    } catch {
        await server.stop()
        server.directory.remove()
        throw error
    }
}
