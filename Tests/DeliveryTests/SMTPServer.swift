import Foundation
import ProcessSupport
import TestSupport

/// A real SMTP server on loopback (`scripts/smtp-server.py`, aiosmtpd):
/// STARTTLS with a fresh self-signed certificate, AUTH, and every accepted
/// message parsed by Python's `email` package into `messages.jsonl`.
struct SMTPServer {
    static let username = "notify"
    static let password = "s3cret pass"

    /// aiosmtpd can be imported, or `CI=true` (where its absence must fail
    /// the run). `make test` installs it (`scripts/install-test-servers.sh`).
    static let isAvailable = ProcessInfo.processInfo.environment["CI"] == "true" || PythonServerProcess.canImport("aiosmtpd")

    let server: PythonServerProcess
    let directory: TemporaryDirectory
    var port: Int { server.port }
    /// The server's certificate, to trust as a root.
    var certificate: String { directory.file("cert.pem") }

    /// Runs `body` with a new server; `tls: "none"` offers no STARTTLS,
    /// `authenticated: false` no AUTH.
    static func run(tls: String = "starttls", authenticated: Bool = true, _ body: (SMTPServer) async throws -> Void) async throws {
        try await withTemporaryDirectory { directory in
            var arguments = ["--directory", directory.path, "--tls", tls]
            if authenticated { arguments += ["--username", username, "--password", password] }
            let server = try await PythonServerProcess.start("smtp-server.py", arguments: arguments, log: directory.file("smtp.log"), name: "the SMTP server")
            defer { server.stop() }
            try await body(SMTPServer(server: server, directory: directory))
        }
    }

    /// Every message accepted so far, as Python's `email` package read it.
    func messages() throws -> [[String: Any]] {
        let text = (try? String(contentsOfFile: directory.file("messages.jsonl"), encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").map { line in
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw TestServerError(description: "messages.jsonl has a line that is not an object: \(line.prefix(100))")
            }
            return object
        }
    }
}
