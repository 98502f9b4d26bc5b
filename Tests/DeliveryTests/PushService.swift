import Foundation
import Notifications
import ProcessSupport
import TestSupport

/// The push service stand-in (`scripts/push-service.py`): it hands out
/// subscriptions as a browser would, and decrypts and verifies every push
/// with the subscription's private key.
struct PushService {
    let server: PythonServerProcess
    var port: Int { server.port }

    /// Runs `body` with a new stand-in, stopped afterwards.
    static func run(_ body: (PushService) async throws -> Void) async throws {
        try await withTemporaryDirectory { directory in
            let server = try await PythonServerProcess.start("push-service.py", log: directory.file("push-service.log"), name: "the push service stand-in")
            defer { server.stop() }
            try await body(PushService(server: server))
        }
    }

    /// A new subscription; with `status`, its first `times` pushes (all
    /// without `times`) are answered with that status.
    func subscribe(status: Int? = nil, times: Int? = nil, retryAfter: Int? = nil) async throws -> PushSubscription {
        var options: [String] = []
        if let status { options.append("\"status\":\(status)") }
        if let times { options.append("\"times\":\(times)") }
        if let retryAfter { options.append("\"retry_after\":\(retryAfter)") }
        let response = try await httpRequest(
            port: port, "POST", "/subscriptions", headers: [("Content-Type", "application/json")], body: "{" + options.joined(separator: ",") + "}")
        guard response.status == 201, let endpoint = response.json["endpoint"] as? String, let keys = response.json["keys"] as? [String: Any],
              let p256dh = keys["p256dh"] as? String, let auth = keys["auth"] as? String else {
            throw TestServerError(description: "POST /subscriptions answered \(response.status): \(response.body)")
        }
        return PushSubscription(endpoint: endpoint, p256dh: p256dh, auth: auth)
    }

    /// Every push received so far, as the stand-in recorded it.
    func messages() async throws -> [[String: Any]] {
        let response = try await httpRequest(port: port, "GET", "/messages")
        guard response.status == 200, let list = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [[String: Any]] else {
            throw TestServerError(description: "GET /messages answered \(response.status): \(response.body.prefix(200))")
        }
        return list
    }
}

struct TestServerError: Error, CustomStringConvertible {
    let description: String
}
