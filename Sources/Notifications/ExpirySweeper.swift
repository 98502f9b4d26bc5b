public import KeyValueStore
public import Logging
public import ServiceLifecycle

/// Deletes expired items (idempotency markers, and anything else with a
/// TTL) in the background, a bounded number at a time.
public struct ExpirySweeper: Service, CustomStringConvertible {
    let store: any KeyValueStore
    let interval: Duration
    let batchLimit: Int
    let logger: Logger

    public init(store: any KeyValueStore, interval: Duration = .seconds(60), batchLimit: Int = 1_000, logger: Logger) {
        self.store = store
        self.interval = interval
        self.batchLimit = batchLimit
        self.logger = logger
    }

    public var description: String { "ExpirySweeper(every \(interval))" }

    /// Sweeps until nothing expired is left; returns how many it deleted.
    @discardableResult
    public func sweep() async throws(KeyValueStoreError) -> Int {
        var total = 0
        while !Task.isShuttingDownGracefully {
            let deleted = try await store.sweepExpiredItems(limit: batchLimit)
            total += deleted
            if deleted < batchLimit { break }
        }
        return total
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let deleted = try await sweep()
                if deleted > 0 { logger.debug("swept expired items", metadata: ["deleted": .stringConvertible(deleted)]) }
            } catch {
                logger.warning("sweeping expired items failed; retrying later", metadata: ["error": .string(error.description)])
            }
            try? await cancelWhenGracefulShutdown { [interval] in try await Task.sleep(for: interval) }
        }
    }
}
