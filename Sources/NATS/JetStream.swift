import CNATS
import Dispatch
import Synchronization

/// A JetStream stream's settings (the subset notify manages).
public struct StreamConfiguration: Sendable, Hashable {
    public enum Storage: String, Sendable, Hashable, CaseIterable { case file, memory }

    public var name: String
    public var subjects: [String]
    public var storage: Storage
    /// Messages older than this are removed; `nil` keeps them until other limits.
    public var maxAge: Duration?
    /// Window for `Nats-Msg-Id` de-duplication; `nil` for the server default (2 min).
    public var duplicateWindow: Duration?
    public var replicas: Int

    public init(name: String, subjects: [String], storage: Storage = .file, maxAge: Duration? = nil, duplicateWindow: Duration? = nil, replicas: Int = 1) {
        self.name = name
        self.subjects = subjects
        self.storage = storage
        self.maxAge = maxAge
        self.duplicateWindow = duplicateWindow
        self.replicas = replicas
    }
}

/// What the server says about a stream.
public struct StreamInfo: Sendable, Hashable {
    public let name: String
    public let subjects: [String]
    /// Creation time, nanoseconds since the Unix epoch. Identifies this
    /// incarnation of the stream (sequences restart when it is re-created).
    public let created: Int64
    public let messages: UInt64
    public let firstSequence: UInt64
    public let lastSequence: UInt64
    /// Copies of the stream in a cluster (1 on a single server).
    public let replicas: Int
}

/// A message as a stream keeps it.
public struct StoredMessage: Sendable {
    public let sequence: UInt64
    /// When the stream stored it, in nanoseconds since the Unix epoch.
    public let time: Int64
    public let message: NATSMessage
}

/// A durable pull consumer's settings (explicit acks, deliver all).
public struct ConsumerConfiguration: Sendable, Hashable {
    public var durableName: String
    public var filterSubject: String?
    /// How long the server waits for an ack before redelivering.
    public var ackWait: Duration
    /// Deliveries before the server gives up on a message.
    public var maxDeliver: Int
    /// Redelivery delays per attempt (overrides `ackWait` for redeliveries).
    public var backoff: [Duration]
    /// Unacknowledged messages the server lets out at once, across workers.
    public var maxAckPending: Int

    public init(durableName: String, filterSubject: String? = nil, ackWait: Duration = .seconds(30), maxDeliver: Int = 5, backoff: [Duration] = [], maxAckPending: Int = 20_000) {
        self.durableName = durableName
        self.filterSubject = filterSubject
        self.ackWait = ackWait
        self.maxDeliver = maxDeliver
        self.backoff = backoff
        self.maxAckPending = maxAckPending
    }
}

/// What the server says about a consumer.
public struct ConsumerInfo: Sendable, Hashable {
    public let stream: String
    public let name: String
    public let filterSubject: String?
    public let ackWait: Duration
    public let maxDeliver: Int
    public let backoff: [Duration]
    public let maxAckPending: Int
    /// Messages not yet delivered.
    public let numPending: UInt64
    /// Messages delivered and not yet acknowledged.
    public let numAckPending: Int64
    /// Messages redelivered and not yet acknowledged.
    public let numRedelivered: Int64
    public let numWaiting: Int64
    /// Consumer sequence of the last delivery (each redelivery counts).
    public let deliveredConsumerSequence: UInt64
    /// Consumer sequence up to which everything is acknowledged.
    public let ackFloorConsumerSequence: UInt64
}

/// The server's acknowledgement of a JetStream publish.
public struct PublishAck: Sendable, Hashable {
    public let stream: String
    public let sequence: UInt64
    /// The server had already stored a message with this `Nats-Msg-Id`.
    public let duplicate: Bool
}

/// JetStream on one connection: streams, consumers, publishing.
public final class JetStream: @unchecked Sendable {
    let handle: OpaquePointer
    public let connection: NATSConnection
    /// How long API requests and publishes wait for the server.
    public let requestTimeout: Duration

    public init(connection: NATSConnection, requestTimeout: Duration = .seconds(5)) throws(NATSError) {
        var options = jsOptions()
        jsOptions_Init(&options)
        options.Wait = max(1, milliseconds(requestTimeout))
        var context: OpaquePointer?
        try check(natsConnection_JetStream(&context, connection.handle, &options), "open JetStream context")
        guard let context else { throw NATSError(code: .other, operation: "open JetStream context", message: "no context returned") }
        self.handle = context
        self.connection = connection
        self.requestTimeout = requestTimeout
    }

    deinit {
        jsCtx_Destroy(handle)
    }

    // MARK: Streams

    /// The stream's info, or `nil` when it does not exist.
    public func streamInfo(_ name: String) async throws(NATSError) -> StreamInfo? {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) -> StreamInfo? in
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var code = jsErrCode(rawValue: 0)
            let status = js_GetStreamInfo(&info, handle, name, nil, &code)
            if status == NATS_NOT_FOUND || code == JSStreamNotFoundErr { return nil }
            try check(status, "get stream info", jetStreamCode: code, context: "stream \(name)")
            defer { jsStreamInfo_Destroy(info) }
            return info.map(StreamInfo.init)
        }
    }

    /// Creates the stream.
    public func addStream(_ configuration: StreamConfiguration) async throws(NATSError) -> StreamInfo {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) -> StreamInfo in
            let arena = CStringArena()
            var config = jsStreamConfig()
            jsStreamConfig_Init(&config)
            config.Name = arena.string(configuration.name)
            config.Subjects = arena.array(configuration.subjects)
            config.SubjectsLen = Int32(configuration.subjects.count)
            config.Storage = configuration.storage == .file ? js_FileStorage : js_MemoryStorage
            config.MaxAge = configuration.maxAge.map(nanoseconds) ?? 0
            config.Duplicates = configuration.duplicateWindow.map(nanoseconds) ?? 0
            config.Replicas = Int64(configuration.replicas)
            var info: UnsafeMutablePointer<jsStreamInfo>?
            var code = jsErrCode(rawValue: 0)
            let status = js_AddStream(&info, handle, &config, nil, &code)
            try check(status, "create stream", jetStreamCode: code, context: "stream \(configuration.name) on \(configuration.subjects.joined(separator: ","))")
            defer { jsStreamInfo_Destroy(info) }
            guard let info else { throw NATSError(code: .other, operation: "create stream", message: "no stream info returned") }
            return StreamInfo(info)
        }
    }

    /// Returns the stream, creating it when missing. An existing stream is
    /// used as it is, but must capture every subject of `configuration`.
    public func ensureStream(_ configuration: StreamConfiguration) async throws(NATSError) -> (info: StreamInfo, created: Bool) {
        if let existing = try await streamInfo(configuration.name) {
            let missing = configuration.subjects.filter { !existing.subjects.contains($0) }
            if !missing.isEmpty {
                throw NATSError(
                    code: .invalidArgument, operation: "check stream",
                    message: "stream \(configuration.name) exists but captures \(existing.subjects) and not \(missing); fix its subjects or configure another stream name",
                    context: "stream \(configuration.name)")
            }
            return (existing, false)
        }
        do {
            return (try await addStream(configuration), true)
        } catch {
            // Another worker may have created it between our lookup and add.
            if let existing = try await streamInfo(configuration.name) { return (existing, false) }
            throw error
        }
    }

    // MARK: Stored messages

    /// The message stored at `sequence`, or `nil` when there is none (never
    /// stored, deleted, or purged).
    public func message(stream: String, sequence: UInt64) async throws(NATSError) -> StoredMessage? {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) -> StoredMessage? in
            var message: OpaquePointer?
            var code = jsErrCode(rawValue: 0)
            let status = js_GetMsg(&message, handle, stream, sequence, nil, &code)
            if status == NATS_NOT_FOUND || code == JSNoMessageFoundErr { return nil }
            try check(status, "get stream message", jetStreamCode: code, context: "stream \(stream) sequence \(sequence)")
            guard let message else { return nil }
            defer { natsMsg_Destroy(message) }
            return StoredMessage(sequence: natsMsg_GetSequence(message), time: natsMsg_GetTime(message), message: NATSMessage(copying: message))
        }
    }

    /// Deletes the message at `sequence`; `false` when there was none.
    @discardableResult
    public func deleteMessage(stream: String, sequence: UInt64) async throws(NATSError) -> Bool {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) -> Bool in
            var code = jsErrCode(rawValue: 0)
            let status = js_DeleteMsg(handle, stream, sequence, nil, &code)
            if status == NATS_NOT_FOUND || code == JSNoMessageFoundErr || code == JSSequenceNotFoundErr { return false }
            try check(status, "delete stream message", jetStreamCode: code, context: "stream \(stream) sequence \(sequence)")
            return true
        }
    }

    /// Removes every message stored before `sequence`, or all of them.
    public func purge(stream: String, before sequence: UInt64? = nil) async throws(NATSError) {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) in
            var options = jsOptions()
            jsOptions_Init(&options)
            options.Wait = max(1, milliseconds(requestTimeout))
            if let sequence { options.Stream.Purge.Sequence = sequence }
            var code = jsErrCode(rawValue: 0)
            try check(js_PurgeStream(handle, stream, &options, &code), "purge stream", jetStreamCode: code, context: "stream \(stream)")
        }
    }

    // MARK: Consumers

    /// The consumer's info, or `nil` when it does not exist.
    public func consumerInfo(stream: String, name: String) async throws(NATSError) -> ConsumerInfo? {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) -> ConsumerInfo? in
            var info: UnsafeMutablePointer<jsConsumerInfo>?
            var code = jsErrCode(rawValue: 0)
            let status = js_GetConsumerInfo(&info, handle, stream, name, nil, &code)
            if status == NATS_NOT_FOUND || code == JSConsumerNotFoundErr { return nil }
            try check(status, "get consumer info", jetStreamCode: code, context: "consumer \(name) on stream \(stream)")
            defer { jsConsumerInfo_Destroy(info) }
            return info.map(ConsumerInfo.init)
        }
    }

    /// Creates the durable consumer, or updates an existing one whose
    /// settings differ. A different filter subject is an error: changing
    /// what a durable consumer reads would silently skip or replay events.
    @discardableResult
    public func ensureConsumer(stream: String, _ configuration: ConsumerConfiguration) async throws(NATSError) -> ConsumerInfo {
        let name = configuration.durableName
        if let existing = try await consumerInfo(stream: stream, name: name) {
            if existing.filterSubject != configuration.filterSubject {
                throw NATSError(
                    code: .invalidArgument, operation: "check consumer",
                    message: "consumer \(name) exists with filter \(existing.filterSubject ?? "(none)"), not \(configuration.filterSubject ?? "(none)"); delete it or configure another consumer name",
                    context: "consumer \(name) on stream \(stream)")
            }
            let same = existing.ackWait == configuration.ackWait && existing.maxDeliver == configuration.maxDeliver
                && existing.backoff == configuration.backoff && existing.maxAckPending == configuration.maxAckPending
            if same { return existing }
            return try await writeConsumer(stream: stream, configuration, update: true)
        }
        do {
            return try await writeConsumer(stream: stream, configuration, update: false)
        } catch {
            if let existing = try await consumerInfo(stream: stream, name: name) { return existing }
            throw error
        }
    }

    private func writeConsumer(stream: String, _ configuration: ConsumerConfiguration, update: Bool) async throws(NATSError) -> ConsumerInfo {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) -> ConsumerInfo in
            let arena = CStringArena()
            var config = jsConsumerConfig()
            jsConsumerConfig_Init(&config)
            config.Durable = arena.string(configuration.durableName)
            config.FilterSubject = arena.optional(configuration.filterSubject)
            config.AckPolicy = js_AckExplicit
            config.DeliverPolicy = js_DeliverAll
            config.AckWait = nanoseconds(configuration.ackWait)
            config.MaxDeliver = Int64(configuration.maxDeliver)
            config.MaxAckPending = Int64(configuration.maxAckPending)
            let backoff = configuration.backoff.map(nanoseconds)
            var info: UnsafeMutablePointer<jsConsumerInfo>?
            var code = jsErrCode(rawValue: 0)
            let status = backoff.withUnsafeBufferPointer { buffer -> natsStatus in
                config.BackOff = buffer.isEmpty ? nil : UnsafeMutablePointer(mutating: buffer.baseAddress)
                config.BackOffLen = Int32(buffer.count)
                return update
                    ? js_UpdateConsumer(&info, handle, stream, &config, nil, &code)
                    : js_AddConsumer(&info, handle, stream, &config, nil, &code)
            }
            try check(status, update ? "update consumer" : "create consumer", jetStreamCode: code,
                      context: "consumer \(configuration.durableName) on stream \(stream)")
            defer { jsConsumerInfo_Destroy(info) }
            guard let info else { throw NATSError(code: .other, operation: "create consumer", message: "no consumer info returned") }
            return ConsumerInfo(info)
        }
    }

    /// Binds a pull subscription to an existing durable consumer (see
    /// ``ensureConsumer(stream:_:)``). Closing it never deletes the consumer.
    public func pullSubscribe(stream: String, consumer: String) async throws(NATSError) -> PullSubscription {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) -> PullSubscription in
            let arena = CStringArena()
            var options = jsSubOptions()
            jsSubOptions_Init(&options)
            options.Stream = arena.string(stream)
            options.Consumer = arena.string(consumer)
            var subscription: OpaquePointer?
            var code = jsErrCode(rawValue: 0)
            let status = js_PullSubscribe(&subscription, handle, nil, consumer, nil, &options, &code)
            try check(status, "pull subscribe", jetStreamCode: code, context: "consumer \(consumer) on stream \(stream)")
            guard let subscription else { throw NATSError(code: .other, operation: "pull subscribe", message: "no subscription returned") }
            return PullSubscription(handle: subscription, jetStream: self, stream: stream, consumer: consumer)
        }
    }

    // MARK: Publishing

    /// Publishes and waits for the stream's acknowledgement.
    public func publish(
        _ subject: String, payload: [UInt8], headers: NATSHeaders = [:], messageID: String? = nil
    ) async throws(NATSError) -> PublishAck {
        try await onQueue(blockingQueue) { [self] () throws(NATSError) -> PublishAck in
            let message = try makeMessage(subject: subject, reply: nil, headers: headers, payload: payload)
            defer { natsMsg_Destroy(message) }
            let arena = CStringArena()
            var options = jsPubOptions()
            jsPubOptions_Init(&options)
            options.MsgId = arena.optional(messageID)
            options.MaxWait = max(1, milliseconds(requestTimeout))
            var ack: UnsafeMutablePointer<jsPubAck>?
            var code = jsErrCode(rawValue: 0)
            let status = js_PublishMsg(&ack, handle, message, &options, &code)
            if status == NATS_NO_RESPONDERS {
                throw NATSError(code: .noResponders, operation: "JetStream publish",
                                message: "no JetStream stream captures this subject (is the worker's stream created? `notify publish --core` sends without JetStream)",
                                context: "subject \(subject)")
            }
            try check(status, "JetStream publish", jetStreamCode: code, context: "subject \(subject)")
            defer { jsPubAck_Destroy(ack) }
            guard let ack else { throw NATSError(code: .other, operation: "JetStream publish", message: "no ack returned") }
            return PublishAck(stream: String(cString: ack.pointee.Stream), sequence: ack.pointee.Sequence, duplicate: ack.pointee.Duplicate)
        }
    }
}

extension StreamInfo {
    init(_ info: UnsafeMutablePointer<jsStreamInfo>) {
        let config = info.pointee.Config
        name = config.map { String(cString: $0.pointee.Name) } ?? ""
        var subjects: [String] = []
        if let config, let list = config.pointee.Subjects {
            for index in 0..<Int(config.pointee.SubjectsLen) {
                if let subject = list[index] { subjects.append(String(cString: subject)) }
            }
        }
        self.subjects = subjects
        created = info.pointee.Created
        messages = info.pointee.State.Msgs
        firstSequence = info.pointee.State.FirstSeq
        lastSequence = info.pointee.State.LastSeq
        replicas = Int(config?.pointee.Replicas ?? 1)
    }
}

extension ConsumerInfo {
    init(_ info: UnsafeMutablePointer<jsConsumerInfo>) {
        stream = String(cString: info.pointee.Stream)
        name = String(cString: info.pointee.Name)
        let config = info.pointee.Config
        filterSubject = config.flatMap { $0.pointee.FilterSubject }.map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
        ackWait = .nanoseconds(config?.pointee.AckWait ?? 0)
        maxDeliver = Int(config?.pointee.MaxDeliver ?? 0)
        var backoff: [Duration] = []
        if let config, let values = config.pointee.BackOff {
            for index in 0..<Int(config.pointee.BackOffLen) { backoff.append(.nanoseconds(values[index])) }
        }
        self.backoff = backoff
        maxAckPending = Int(config?.pointee.MaxAckPending ?? 0)
        numPending = info.pointee.NumPending
        numAckPending = info.pointee.NumAckPending
        numRedelivered = info.pointee.NumRedelivered
        numWaiting = info.pointee.NumWaiting
        deliveredConsumerSequence = info.pointee.Delivered.Consumer
        ackFloorConsumerSequence = info.pointee.AckFloor.Consumer
    }
}

func nanoseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
}
