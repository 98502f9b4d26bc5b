import CNATS
import Dispatch
import Synchronization

/// Failures reported by nats.c for asynchronous publishes.
final class AsyncPublishCallbacks: Sendable {
    let failures = Atomic<Int>(0)
    let lastFailure = Mutex<String?>(nil)
}

/// Publishes to JetStream without waiting for each acknowledgement: many
/// publishes in flight, then ``waitForAcks(timeout:)``. For bulk loads
/// (benchmarks, replays); single events use ``JetStream/publish(_:payload:headers:messageID:)``.
public final class JetStreamAsyncPublisher: @unchecked Sendable {
    /// One message to publish.
    public struct Message: Sendable {
        public var subject: String
        public var payload: [UInt8]
        public var messageID: String?

        public init(subject: String, payload: [UInt8], messageID: String? = nil) {
            self.subject = subject
            self.payload = payload
            self.messageID = messageID
        }
    }

    private let handle: OpaquePointer
    private let callbacks = AsyncPublishCallbacks()
    private let connection: NATSConnection
    /// Publishing stalls when `maxPending` are in flight: keep it off the
    /// cooperative pool.
    private let queue = DispatchQueue(label: "notify.nats.async-publish")

    public init(connection: NATSConnection, maxPending: Int = 4096, requestTimeout: Duration = .seconds(5)) throws(NATSError) {
        var options = jsOptions()
        jsOptions_Init(&options)
        options.Wait = max(1, milliseconds(requestTimeout))
        options.PublishAsync.MaxPending = Int64(maxPending)
        options.PublishAsync.StallWait = max(1, milliseconds(requestTimeout))
        options.PublishAsync.ErrHandler = { _, failure, closure in
            guard let closure, let failure else { return }
            let callbacks = Unmanaged<AsyncPublishCallbacks>.fromOpaque(closure).takeUnretainedValue()
            callbacks.failures.add(1, ordering: .relaxed)
            let text = failure.pointee.ErrText.map { String(cString: $0) } ?? String(cString: natsStatus_GetText(failure.pointee.Err))
            callbacks.lastFailure.withLock { $0 = text }
        }
        options.PublishAsync.ErrHandlerClosure = Unmanaged.passUnretained(callbacks).toOpaque()
        var context: OpaquePointer?
        try check(natsConnection_JetStream(&context, connection.handle, &options), "open JetStream context")
        guard let context else { throw NATSError(code: .other, operation: "open JetStream context", message: "no context returned") }
        self.handle = context
        self.connection = connection
    }

    deinit {
        // Let outstanding acks arrive (or time out) before the callbacks go.
        var options = jsPubOptions()
        jsPubOptions_Init(&options)
        options.MaxWait = 2000
        _ = js_PublishAsyncComplete(handle, &options)
        jsCtx_Destroy(handle)
    }

    /// Sends every message; returns once they are handed to nats.c.
    public func publish(_ messages: [Message]) async throws(NATSError) {
        try await onQueue(queue) { [self] () throws(NATSError) in
            for message in messages {
                let status: natsStatus
                if let id = message.messageID {
                    var options = jsPubOptions()
                    jsPubOptions_Init(&options)
                    status = id.withCString { id in
                        options.MsgId = id
                        return message.payload.withUnsafeBytes {
                            js_PublishAsync(handle, message.subject, $0.baseAddress, Int32($0.count), &options)
                        }
                    }
                } else {
                    status = message.payload.withUnsafeBytes {
                        js_PublishAsync(handle, message.subject, $0.baseAddress, Int32($0.count), nil)
                    }
                }
                try check(status, "JetStream async publish", context: "subject \(message.subject)")
            }
        }
    }

    /// Waits until every publish so far is acknowledged or failed.
    public func waitForAcks(timeout: Duration = .seconds(30)) async throws(NATSError) {
        try await onQueue(queue) { [self] () throws(NATSError) in
            var options = jsPubOptions()
            jsPubOptions_Init(&options)
            options.MaxWait = max(1, milliseconds(timeout))
            try check(js_PublishAsyncComplete(handle, &options), "wait for JetStream acks")
        }
    }

    /// Publishes the server rejected or that timed out.
    public var failureCount: Int { callbacks.failures.load(ordering: .relaxed) }

    /// The text of the most recent failure.
    public var lastFailure: String? { callbacks.lastFailure.withLock { $0 } }
}
