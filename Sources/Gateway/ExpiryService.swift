import ServiceLifecycle
import Synchronization

/// Closes connections whose token has expired (WebSocket close 1008, end of
/// the SSE stream). One service for all connections, checking once a
/// second, instead of a timer task per connection: idle connections are
/// what a gateway holds most of, and each task costs memory.
final class ExpiryService: Service, Sendable {
    private let buckets = Mutex<[Int64: [ObjectIdentifier: any LiveSink]]>([:])

    /// Closes `sink` with `.tokenExpired` at `expiresAt` (Unix seconds).
    func add(_ sink: any LiveSink, expiresAt: Int64) {
        buckets.withLock { $0[expiresAt, default: [:]][ObjectIdentifier(sink)] = sink }
    }

    /// Forgets `sink` (its connection ended first).
    func remove(_ sink: any LiveSink, expiresAt: Int64) {
        buckets.withLock { buckets in
            buckets[expiresAt]?[ObjectIdentifier(sink)] = nil
            if buckets[expiresAt]?.isEmpty == true { buckets[expiresAt] = nil }
        }
    }

    /// Closes every connection whose expiry is at or before `now`.
    func expire(now: Int64) {
        let due = buckets.withLock { buckets -> [any LiveSink] in
            let keys = buckets.keys.filter { $0 <= now }
            var due: [any LiveSink] = []
            for key in keys {
                due += buckets.removeValue(forKey: key)?.values ?? [:].values
            }
            return due
        }
        for sink in due { sink.close(.tokenExpired) }
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            expire(now: unixNow())
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
        }
    }
}
