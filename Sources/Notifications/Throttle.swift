/// Why an event was throttled.
public enum Throttled: Sendable, Hashable {
    /// The owner is over its rate.
    case owner
    /// This trigger user is over its rate for the owner.
    case triggerUser
}

/// Rates of new notifications: per owner, and per trigger user for one
/// owner (so one actor cannot flood another). `nil` turns a limit off.
public struct ThrottleLimits: Sendable, Hashable {
    public var owner: Rate?
    public var triggerUser: Rate?

    public init(owner: Rate? = nil, triggerUser: Rate? = nil) {
        self.owner = owner
        self.triggerUser = triggerUser
    }

    /// A token bucket: `perMinute` tokens a minute, holding at most `burst`.
    public struct Rate: Sendable, Hashable {
        public var perMinute: Double
        public var burst: Double

        public init(perMinute: Double, burst: Double) {
            self.perMinute = perMinute
            self.burst = burst
        }
    }
}

/// Token buckets in one worker's memory. With several workers each keeps
/// its own, so an owner's events spread over N workers may reach N times
/// the rate before folding. Buckets back to full are forgotten, so memory
/// follows the users currently over their rates, not all users.
final class Throttle {
    private struct Bucket {
        var tokens: Double
        var at: Double
    }

    let limits: ThrottleLimits
    private var owners: [String: Bucket] = [:]
    private var pairs: [String: Bucket] = [:]
    private var lastPrune = 0.0

    init(limits: ThrottleLimits) {
        self.limits = limits
    }

    /// Takes a token for a new notification of `owner` from `trigger`;
    /// `nil` when both buckets had one, else which limit it hit (then no
    /// token is taken).
    func admit(owner: String, trigger: String, now: Double) -> Throttled? {
        prune(now: now)
        let pair = owner + " " + trigger
        if let rate = limits.triggerUser, !Self.available(&pairs[pair], rate: rate, now: now) { return .triggerUser }
        if let rate = limits.owner, !Self.available(&owners[owner], rate: rate, now: now) { return .owner }
        if limits.triggerUser != nil { pairs[pair]?.tokens -= 1 }
        if limits.owner != nil { owners[owner]?.tokens -= 1 }
        return nil
    }

    /// Refills the bucket to `now`; whether it holds a token.
    private static func available(_ bucket: inout Bucket?, rate: ThrottleLimits.Rate, now: Double) -> Bool {
        var current = bucket ?? Bucket(tokens: rate.burst, at: now)
        current.tokens = min(rate.burst, current.tokens + (now - current.at) * rate.perMinute / 60)
        current.at = now
        bucket = current
        return current.tokens >= 1
    }

    /// Every minute, forgets buckets that are full again.
    private func prune(now: Double) {
        guard now - lastPrune >= 60 else { return }
        lastPrune = now
        if let rate = limits.owner { owners = owners.filter { $0.value.tokens + (now - $0.value.at) * rate.perMinute / 60 < rate.burst } }
        if let rate = limits.triggerUser { pairs = pairs.filter { $0.value.tokens + (now - $0.value.at) * rate.perMinute / 60 < rate.burst } }
    }
}
