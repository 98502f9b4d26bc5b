import Dispatch

/// Runs a blocking nats.c call on `queue` (never on Swift's cooperative
/// pool) and resumes the caller with its result.
func onQueue<T: Sendable>(
    _ queue: DispatchQueue,
    _ body: @escaping @Sendable () throws(NATSError) -> T
) async throws(NATSError) -> T {
    let result: Result<T, NATSError> = await withCheckedContinuation { continuation in
        queue.async {
            do throws(NATSError) {
                continuation.resume(returning: .success(try body()))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
    }
    return try result.get()
}

/// Where JetStream API requests and connects block.
let blockingQueue = DispatchQueue(label: "notify.nats.blocking", attributes: .concurrent)

/// C strings that stay valid until the arena is released, for nats.c config
/// structs whose `const char *` fields must outlive one call expression.
final class CStringArena {
    private var pointers: [UnsafeMutablePointer<CChar>] = []

    func string(_ value: String) -> UnsafePointer<CChar> {
        let pointer = strdup(value)!
        pointers.append(pointer)
        return UnsafePointer(pointer)
    }

    func optional(_ value: String?) -> UnsafePointer<CChar>? {
        value.map(string)
    }

    /// An array of C strings, valid for the arena's lifetime.
    func array(_ values: [String]) -> UnsafeMutablePointer<UnsafePointer<CChar>?> {
        let array = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: max(values.count, 1))
        for (index, value) in values.enumerated() { array[index] = string(value) }
        arrays.append(array)
        return array
    }

    private var arrays: [UnsafeMutablePointer<UnsafePointer<CChar>?>] = []

    deinit {
        pointers.forEach { free($0) }
        arrays.forEach { $0.deallocate() }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
