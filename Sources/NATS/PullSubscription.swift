import CNATS
import Dispatch
import Synchronization

/// Where a JetStream message sits in its stream and how often it was delivered.
public struct JetStreamMetadata: Sendable, Hashable {
    public let stream: String
    public let consumer: String
    public let streamSequence: UInt64
    public let consumerSequence: UInt64
    /// 1 on first delivery.
    public let deliveryCount: UInt64
    /// Messages left for the consumer after this one.
    public let pending: UInt64
    /// When the stream stored it, nanoseconds since the Unix epoch.
    public let timestamp: Int64
}

/// A message fetched from a pull consumer. Settle it with exactly one of
/// ``ack()``, ``nak(delay:)`` or ``term()``; the nats.c message is destroyed
/// when this object goes away.
public final class JetStreamMessage: @unchecked Sendable {
    public let subject: String
    public let headers: NATSHeaders
    public let payload: [UInt8]
    public let metadata: JetStreamMetadata
    private let handle: OpaquePointer
    /// Whether a settle succeeded; its lock also serialises settles.
    private let settled = Mutex(false)
    /// nats.c acks through the message's subscription: keep it alive.
    private let subscription: PullSubscription

    fileprivate init(taking message: OpaquePointer, subscription: PullSubscription) throws(NATSError) {
        var meta: UnsafeMutablePointer<jsMsgMetaData>?
        let status = natsMsg_GetMetaData(&meta, message)
        guard status == NATS_OK, let meta else {
            natsMsg_Destroy(message)
            throw NATSError(operation: "read message metadata", status: status)
        }
        defer { jsMsgMetaData_Destroy(meta) }
        metadata = JetStreamMetadata(
            stream: String(cString: meta.pointee.Stream),
            consumer: String(cString: meta.pointee.Consumer),
            streamSequence: meta.pointee.Sequence.Stream,
            consumerSequence: meta.pointee.Sequence.Consumer,
            deliveryCount: meta.pointee.NumDelivered,
            pending: meta.pointee.NumPending,
            timestamp: meta.pointee.Timestamp)
        subject = String(cString: natsMsg_GetSubject(message))
        headers = copyHeaders(message)
        payload = copyPayload(message)
        handle = message
        self.subscription = subscription
    }

    deinit {
        natsMsg_Destroy(handle)
    }

    /// Whether ack, nak or term already succeeded.
    public var isSettled: Bool { settled.withLock { $0 } }

    private func settle(_ operation: String, _ body: (OpaquePointer) -> natsStatus) throws(NATSError) {
        let status = settled.withLock { done -> natsStatus in
            let status = body(handle)
            if status == NATS_OK { done = true }
            return status
        }
        try check(status, operation, context: "stream \(metadata.stream) sequence \(metadata.streamSequence)")
    }

    /// Acknowledges processing: the server will not redeliver it.
    public func ack() throws(NATSError) {
        try settle("ack") { natsMsg_Ack($0, nil) }
    }

    /// Asks for redelivery, after `delay` when given.
    public func nak(delay: Duration? = nil) throws(NATSError) {
        if let delay {
            try settle("nak") { natsMsg_NakWithDelay($0, max(1, milliseconds(delay)), nil) }
        } else {
            try settle("nak") { natsMsg_Nak($0, nil) }
        }
    }

    /// Tells the server never to redeliver it.
    public func term() throws(NATSError) {
        try settle("term") { natsMsg_Term($0, nil) }
    }

    /// Tells the server the message is still being worked on: its AckWait
    /// starts over, and it is not redelivered meanwhile. Settles nothing.
    public func inProgress() throws(NATSError) {
        let status = settled.withLock { _ in natsMsg_InProgress(handle, nil) }
        try check(status, "in progress", context: "stream \(metadata.stream) sequence \(metadata.streamSequence)")
    }
}

/// A pull subscription bound to a durable consumer.
///
/// ``fetch(maxMessages:maxWait:)`` returns as soon as any message is
/// available, up to `maxMessages`, and waits up to `maxWait` only when none
/// is: a quiet stream costs one long poll, and a lone event is handed over
/// at once instead of waiting for a batch to fill.
public final class PullSubscription: @unchecked Sendable {
    private let handle: OpaquePointer
    public let jetStream: JetStream
    public let stream: String
    public let consumer: String
    /// Fetches block: they run here, one at a time.
    private let queue: DispatchQueue
    private let closed = Atomic<Bool>(false)

    init(handle: OpaquePointer, jetStream: JetStream, stream: String, consumer: String) {
        self.handle = handle
        self.jetStream = jetStream
        self.stream = stream
        self.consumer = consumer
        self.queue = DispatchQueue(label: "notify.nats.fetch.\(consumer)")
    }

    deinit {
        // Bound to a consumer we did not create, so this never deletes it.
        natsSubscription_Destroy(handle)
    }

    /// Up to `maxMessages` messages; an empty array when none arrived within
    /// `maxWait`.
    public func fetch(maxMessages: Int, maxWait: Duration) async throws(NATSError) -> [JetStreamMessage] {
        precondition(maxMessages > 0, "maxMessages must be positive")
        return try await onQueue(queue) { [self] () throws(NATSError) -> [JetStreamMessage] in
            // nats-server 2.9 treats a no-wait request with an expiry as
            // "wait, but return as soon as there is anything".
            let clock = ContinuousClock()
            let start = clock.now
            var messages = try request(batch: maxMessages, noWait: true, expires: maxWait)
            let elapsed = clock.now - start
            if messages.isEmpty, elapsed < maxWait / 2 {
                // Servers that answer "no messages" at once: wait for the
                // first message, then take what else is there.
                messages = try request(batch: 1, noWait: false, expires: maxWait - elapsed)
                if !messages.isEmpty, maxMessages > 1 {
                    messages += try request(batch: maxMessages - 1, noWait: true, expires: .milliseconds(5))
                }
            }
            return messages
        }
    }

    /// One pull request.
    private func request(batch: Int, noWait: Bool, expires: Duration) throws(NATSError) -> [JetStreamMessage] {
        if closed.load(ordering: .relaxed) {
            throw NATSError(code: .connectionClosed, operation: "fetch", message: "the subscription is closed", context: "consumer \(consumer)")
        }
        var request = jsFetchRequest()
        jsFetchRequest_Init(&request)
        request.Batch = Int32(batch)
        request.NoWait = noWait
        request.Expires = max(nanoseconds(expires), 1_000_000)
        var list = natsMsgList()
        let status = natsSubscription_FetchRequest(&list, handle, &request)
        if status == NATS_TIMEOUT || status == NATS_NOT_FOUND {
            return []
        }
        try check(status, "fetch", context: "consumer \(consumer) on stream \(stream)")
        defer { natsMsgList_Destroy(&list) }
        var messages: [JetStreamMessage] = []
        messages.reserveCapacity(Int(list.Count))
        var failure: NATSError?
        for index in 0..<Int(list.Count) {
            guard let message = list.Msgs[index] else { continue }
            list.Msgs[index] = nil  // ours now; the list no longer destroys it
            do {
                messages.append(try JetStreamMessage(taking: message, subscription: self))
            } catch {
                failure = error
            }
        }
        if let failure, messages.isEmpty { throw failure }
        return messages
    }

    /// Stops fetching. The durable consumer stays on the server; messages
    /// fetched but not settled are redelivered after its AckWait.
    public func close() {
        closed.store(true, ordering: .relaxed)
    }
}
