import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// One HTTP request that delivers something (a webhook, a push), and its
/// answer as a ``DeliveryOutcome``: 2xx is sent; 408, 429, 5xx, timeouts
/// and connection errors are transient (with the server's `Retry-After`);
/// a status in `gone` is permanent with the reason `gone`; any other status
/// is permanent.
enum HTTPDelivery {
    static func send(
        _ request: HTTPClientRequest, client: HTTPClient, timeout: Duration, peer: String, gone: Set<Int> = []
    ) async -> DeliveryOutcome {
        do {
            let response = try await client.execute(request, timeout: TimeAmount(timeout))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            let status = Int(response.status.code)
            switch status {
            case 200..<300:
                return .sent
            case _ where gone.contains(status):
                return .permanent(reason: "gone: \(peer) answered \(response.status); the address expired or was revoked")
            case 408, 429, 500...599:
                return .transient(reason: "http_\(status): \(peer) answered \(response.status)", retryAfter: retryAfter(response.headers.first(name: "Retry-After")))
            default:
                return .permanent(reason: "http_\(status): \(peer) answered \(response.status)")
            }
        } catch let error as HTTPClientError where [.deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout].contains(error) {
            return .transient(reason: "timeout: no answer within \(timeout)")
        } catch {
            return .transient(reason: "connection: \(error)")
        }
    }

    /// `Retry-After` as seconds or an HTTP date; `nil` when absent or unreadable.
    static func retryAfter(_ value: String?, now: Date = Date()) -> Duration? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Int(value) { return .seconds(max(0, seconds)) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return .milliseconds(Int64(max(0, date.timeIntervalSince(now)) * 1000))
    }
}
