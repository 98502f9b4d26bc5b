import ServiceLifecycle
import Synchronization

/// Closes connections whose token has expired (WebSocket close 1008, end of
/// the SSE stream). One service for all connections, checking once a
/// second, instead of a timer task per connection: idle connections are
/// what a gateway holds most of, and each task costs memory.
final class ExpiryService: Service, Sendable {
    private let buckets = Mutex<[Int64: [ObjectIdentifier: ClientQueue]]>([:])

    /// Closes `queue` with `.tokenExpired` at `expiresAt` (Unix seconds).
    func add(_ queue: ClientQueue, expiresAt: Int64) {
        buckets.withLock { $0[expiresAt, default: [:]][ObjectIdentifier(queue)] = queue }
    }

    /// Forgets `queue` (its connection ended first).
    func remove(_ queue: ClientQueue, expiresAt: Int64) {
        buckets.withLock { buckets in
            buckets[expiresAt]?[ObjectIdentifier(queue)] = nil
            if buckets[expiresAt]?.isEmpty == true { buckets[expiresAt] = nil }
        }
    }

    /// Closes every queue whose expiry is at or before `now`.
    func expire(now: Int64) {
        let due = buckets.withLock { buckets -> [ClientQueue] in
            let keys = buckets.keys.filter { $0 <= now }
            var due: [ClientQueue] = []
            for key in keys {
                due += buckets.removeValue(forKey: key)?.values ?? [:].values
            }
            return due
        }
        for queue in due { queue.close(.tokenExpired) }
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            expire(now: unixNow())
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
        }
    }
}
