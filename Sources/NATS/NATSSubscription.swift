import CNATS
import Synchronization

/// State shared with one subscription's nats.c callbacks; released by the
/// on-complete callback, after the message handler ran for the last time.
final class SubscriptionCallbacks: Sendable {
    let continuation: AsyncStream<NATSMessage>.Continuation
    let dropped = Atomic<Int>(0)

    init(continuation: AsyncStream<NATSMessage>.Continuation) {
        self.continuation = continuation
    }
}

/// A core NATS subscription, read as an `AsyncSequence` of messages.
///
/// nats.c's handler copies each message out, destroys it and hands the copy
/// to the sequence; no task or actor hop per message. When the reader falls
/// more than `bufferLimit` messages behind, new messages are dropped and
/// counted (core NATS is at-most-once; use JetStream where that matters).
public final class NATSSubscription: AsyncSequence, @unchecked Sendable {
    public typealias Element = NATSMessage

    public let subject: String
    private let handle: OpaquePointer
    private let connection: NATSConnection
    private let stream: AsyncStream<NATSMessage>
    private let callbacks: SubscriptionCallbacks
    private let unsubscribed = Atomic<Bool>(false)

    init(connection: NATSConnection, subject: String, queue: String?, bufferLimit: Int) throws(NATSError) {
        let (stream, continuation) = AsyncStream.makeStream(of: NATSMessage.self, bufferingPolicy: .bufferingOldest(Swift.max(1, bufferLimit)))
        let callbacks = SubscriptionCallbacks(continuation: continuation)
        let closure = Unmanaged.passRetained(callbacks).toOpaque()
        let handler: natsMsgHandler = { _, _, message, closure in
            guard let message else { return }
            let copy = NATSMessage(copying: message)
            natsMsg_Destroy(message)
            guard let closure else { return }
            let callbacks = Unmanaged<SubscriptionCallbacks>.fromOpaque(closure).takeUnretainedValue()
            if case .dropped = callbacks.continuation.yield(copy) {
                callbacks.dropped.add(1, ordering: .relaxed)
            }
        }
        var subscription: OpaquePointer?
        let status: natsStatus
        if let queue {
            status = natsConnection_QueueSubscribe(&subscription, connection.handle, subject, queue, handler, closure)
        } else {
            status = natsConnection_Subscribe(&subscription, connection.handle, subject, handler, closure)
        }
        guard status == NATS_OK, let subscription else {
            Unmanaged<SubscriptionCallbacks>.fromOpaque(closure).release()
            continuation.finish()
            throw NATSError(operation: "subscribe", status: status, context: "subject \(subject)")
        }
        natsSubscription_SetOnCompleteCB(subscription, { closure in
            guard let closure else { return }
            Unmanaged<SubscriptionCallbacks>.fromOpaque(closure).takeRetainedValue().continuation.finish()
        }, closure)
        // Our handler never blocks, so nats.c's own queue stays short; the
        // bound that matters is `bufferLimit`.
        natsSubscription_SetPendingLimits(subscription, 1_000_000, 512 * 1024 * 1024)
        self.subject = subject
        self.handle = subscription
        self.connection = connection
        self.stream = stream
        self.callbacks = callbacks
    }

    deinit {
        natsSubscription_Destroy(handle)
    }

    /// Messages dropped because the reader fell behind.
    public var droppedMessages: Int { callbacks.dropped.load(ordering: .relaxed) }

    /// Stops delivery; the sequence ends after the messages already buffered.
    public func unsubscribe() {
        guard !unsubscribed.exchange(true, ordering: .relaxed) else { return }
        natsSubscription_Unsubscribe(handle)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<NATSMessage>.Iterator

        public mutating func next() async -> NATSMessage? {
            await base.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator())
    }
}
