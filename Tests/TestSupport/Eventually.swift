import Synchronization

/// Polls `condition` until it holds or the timeout passes; the last answer.
public func eventually(timeout: Duration = .seconds(15), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// A boolean a test flips while something else reads it.
public final class Flag: Sendable {
    private let state: Mutex<Bool>
    public init(_ value: Bool) { state = Mutex(value) }
    public var value: Bool {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
}
