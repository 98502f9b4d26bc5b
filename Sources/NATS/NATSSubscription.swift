import CNATS
import Synchronization

/// Messages handed from nats.c's callback thread to one reader, bounded.
final class SubscriptionBuffer: Sendable {
    private struct State {
        var messages: [NATSMessage] = []
        var head = 0
        var waiter: CheckedContinuation<Void, Never>?
        var finished = false
        var dropped = 0
        var count: Int { messages.count - head }
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Called on nats.c's thread: never blocks beyond the lock.
    func append(_ message: NATSMessage) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.finished else { return nil }
            guard state.count < limit else {
                state.dropped += 1
                return nil
            }
            state.messages.append(message)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    var dropped: Int { state.withLock { $0.dropped } }

    var isEmpty: Bool { state.withLock { $0.count == 0 } }

    /// Up to `max` buffered messages; waits for the first. Empty when the
    /// subscription has ended (or the task was cancelled) and nothing is left.
    func next(max: Int) async -> [NATSMessage] {
        while true {
            let batch = state.withLock { state -> [NATSMessage]? in
                if state.count > 0 {
                    let end = state.head + Swift.min(max, state.count)
                    let batch = Array(state.messages[state.head..<end])
                    state.head = end
                    if state.head == state.messages.count {
                        state.messages.removeAll(keepingCapacity: true)
                        state.head = 0
                    } else if state.head > 4096 {
                        state.messages.removeFirst(state.head)
                        state.head = 0
                    }
                    return batch
                }
                return state.finished ? [] : nil
            }
            if let batch { return batch }
            if Task.isCancelled { return [] }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state -> Bool in
                        if state.count > 0 || state.finished || Task.isCancelled { return true }
                        state.waiter = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume()
            }
        }
    }
}

/// A core NATS subscription: read messages one by one as an `AsyncSequence`
/// or in batches with ``nextBatch(max:)``.
///
/// nats.c's handler copies each message out, destroys it and appends the
/// copy to a bounded buffer; no task or actor hop per message. When the
/// reader falls more than `bufferLimit` messages behind, new messages are
/// dropped and counted (core NATS is at-most-once; use JetStream where that
/// matters).
public final class NATSSubscription: AsyncSequence, @unchecked Sendable {
    public typealias Element = NATSMessage

    public let subject: String
    private let handle: OpaquePointer
    private let connection: NATSConnection
    private let buffer: SubscriptionBuffer
    private let unsubscribed = Atomic<Bool>(false)

    init(connection: NATSConnection, subject: String, queue: String?, bufferLimit: Int) throws(NATSError) {
        let buffer = SubscriptionBuffer(limit: bufferLimit)
        let closure = Unmanaged.passRetained(buffer).toOpaque()
        let handler: natsMsgHandler = { _, _, message, closure in
            guard let message else { return }
            let copy = NATSMessage(copying: message)
            natsMsg_Destroy(message)
            guard let closure else { return }
            Unmanaged<SubscriptionBuffer>.fromOpaque(closure).takeUnretainedValue().append(copy)
        }
        var subscription: OpaquePointer?
        let status: natsStatus
        if let queue {
            status = natsConnection_QueueSubscribe(&subscription, connection.handle, subject, queue, handler, closure)
        } else {
            status = natsConnection_Subscribe(&subscription, connection.handle, subject, handler, closure)
        }
        guard status == NATS_OK, let subscription else {
            Unmanaged<SubscriptionBuffer>.fromOpaque(closure).release()
            throw NATSError(operation: "subscribe", status: status, context: "subject \(subject)")
        }
        // Called once, after the handler ran for the last time.
        natsSubscription_SetOnCompleteCB(subscription, { closure in
            guard let closure else { return }
            Unmanaged<SubscriptionBuffer>.fromOpaque(closure).takeRetainedValue().finish()
        }, closure)
        // Our handler never blocks, so nats.c's own queue stays short; the
        // bound that matters is `bufferLimit`.
        natsSubscription_SetPendingLimits(subscription, 1_000_000, 512 * 1024 * 1024)
        self.subject = subject
        self.handle = subscription
        self.connection = connection
        self.buffer = buffer
    }

    deinit {
        natsSubscription_Destroy(handle)
    }

    /// Messages dropped because the reader fell behind.
    public var droppedMessages: Int { buffer.dropped }

    /// Whether no message is waiting to be read.
    public var isIdle: Bool { buffer.isEmpty }

    /// Up to `max` messages: what is buffered, or the next one to arrive.
    /// Empty once the subscription has ended and everything was read.
    public func nextBatch(max: Int) async -> [NATSMessage] {
        await buffer.next(max: max)
    }

    /// Stops delivery at once; messages nats.c has not handed over yet are
    /// lost. The sequence ends after what is already buffered.
    public func unsubscribe() {
        guard !unsubscribed.exchange(true, ordering: .relaxed) else { return }
        natsSubscription_Unsubscribe(handle)
    }

    /// Stops interest but first delivers every message already received;
    /// the sequence ends after the last one.
    public func drain() {
        guard !unsubscribed.exchange(true, ordering: .relaxed) else { return }
        if natsSubscription_Drain(handle) != NATS_OK {
            natsSubscription_Unsubscribe(handle)
        }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let buffer: SubscriptionBuffer
        var pending: [NATSMessage] = []

        public mutating func next() async -> NATSMessage? {
            if pending.isEmpty {
                pending = await buffer.next(max: 256).reversed()
            }
            return pending.popLast()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(buffer: buffer)
    }
}

/// State shared with a handler subscription's nats.c callbacks; released by
/// the on-complete callback.
final class HandlerCallbacks: Sendable {
    let handler: @Sendable (NATSMessage) -> Void
    init(_ handler: @escaping @Sendable (NATSMessage) -> Void) { self.handler = handler }
}

/// A core NATS subscription that hands each message to a handler on nats.c's
/// delivery thread. The handler must not block: copy, enqueue, return.
/// Used for fan-out, where a reader task per subscription would cost more
/// than the work itself.
public final class NATSHandlerSubscription: @unchecked Sendable {
    public let subject: String
    private let handle: OpaquePointer
    private let connection: NATSConnection
    private let unsubscribed = Atomic<Bool>(false)

    init(connection: NATSConnection, subject: String, handler: @escaping @Sendable (NATSMessage) -> Void) throws(NATSError) {
        let closure = Unmanaged.passRetained(HandlerCallbacks(handler)).toOpaque()
        var subscription: OpaquePointer?
        let status = natsConnection_Subscribe(&subscription, connection.handle, subject, { _, _, message, closure in
            guard let message else { return }
            let copy = NATSMessage(copying: message)
            natsMsg_Destroy(message)
            guard let closure else { return }
            Unmanaged<HandlerCallbacks>.fromOpaque(closure).takeUnretainedValue().handler(copy)
        }, closure)
        guard status == NATS_OK, let subscription else {
            Unmanaged<HandlerCallbacks>.fromOpaque(closure).release()
            throw NATSError(operation: "subscribe", status: status, context: "subject \(subject)")
        }
        natsSubscription_SetOnCompleteCB(subscription, { closure in
            guard let closure else { return }
            Unmanaged<HandlerCallbacks>.fromOpaque(closure).release()
        }, closure)
        natsSubscription_SetPendingLimits(subscription, 65_536, 64 * 1024 * 1024)
        self.subject = subject
        self.handle = subscription
        self.connection = connection
    }

    deinit {
        natsSubscription_Destroy(handle)
    }

    /// Stops delivery; the handler is not called after the subscription completes.
    public func unsubscribe() {
        guard !unsubscribed.exchange(true, ordering: .relaxed) else { return }
        natsSubscription_Unsubscribe(handle)
    }

    /// Messages nats.c dropped for this subscription because the handler
    /// fell behind its pending limits.
    public var droppedMessages: Int {
        var dropped: Int64 = 0
        natsSubscription_GetDropped(handle, &dropped)
        return Int(dropped)
    }
}

extension NATSConnection {
    /// Subscribes with a handler called on nats.c's delivery thread.
    public func subscribe(_ subject: String, handler: @escaping @Sendable (NATSMessage) -> Void) throws(NATSError) -> NATSHandlerSubscription {
        try NATSHandlerSubscription(connection: self, subject: subject, handler: handler)
    }
}
