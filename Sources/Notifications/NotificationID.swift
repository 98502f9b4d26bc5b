import Synchronization

/// Makes notification ids: 26 characters of Crockford base32 (ULID layout),
/// a 48-bit millisecond timestamp then 80 random bits. Ids sort in creation
/// order as strings; within one millisecond the random part is incremented,
/// so one generator's ids are strictly increasing.
public final class NotificationIDGenerator: Sendable {
    private struct State {
        var millisecond: UInt64 = 0
        var high: UInt16 = 0  // top 16 of the 80 random bits
        var low: UInt64 = 0   // bottom 64
    }

    private let state = Mutex(State())

    public init() {}

    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    /// The next id at `millisecond` (Unix milliseconds). A clock that goes
    /// backwards keeps the last millisecond, so ids never decrease.
    public func next(millisecond now: UInt64) -> String {
        let (millisecond, high, low) = state.withLock { state -> (UInt64, UInt16, UInt64) in
            if now > state.millisecond {
                var generator = SystemRandomNumberGenerator()
                state.millisecond = now
                state.high = UInt16.random(in: 0...UInt16.max, using: &generator) & 0x7FFF  // room to increment
                state.low = UInt64.random(in: 0...UInt64.max, using: &generator)
            } else {
                let (sum, carry) = state.low.addingReportingOverflow(1)
                state.low = sum
                if carry { state.high &+= 1 }
            }
            return (state.millisecond, state.high, state.low)
        }
        return Self.encode(millisecond: millisecond, high: high, low: low)
    }

    static func encode(millisecond: UInt64, high: UInt16, low: UInt64) -> String {
        var characters = [UInt8](repeating: 0, count: 26)
        // 10 characters of time (50 bits, top 2 always zero for 48-bit time).
        var time = millisecond & 0xFFFF_FFFF_FFFF
        for index in stride(from: 9, through: 0, by: -1) {
            characters[index] = alphabet[Int(time & 31)]
            time >>= 5
        }
        // 16 characters of randomness (80 bits): high 16 bits then low 64.
        var lowBits = low
        var highBits = UInt64(high)
        for index in stride(from: 25, through: 10, by: -1) {
            characters[index] = alphabet[Int(lowBits & 31)]
            lowBits = (lowBits >> 5) | ((highBits & 31) << 59)
            highBits >>= 5
        }
        return String(decoding: characters, as: UTF8.self)
    }

    /// Whether `id` has the shape of a notification id.
    public static func isValid(_ id: String) -> Bool {
        let bytes = id.utf8
        return bytes.count == 26 && bytes.allSatisfy { alphabet.contains($0) } && bytes.first! <= UInt8(ascii: "7")
    }
}
