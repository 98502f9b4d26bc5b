import CNATS

/// An error from NATS: the failed operation, nats.c's status and its text,
/// the JetStream error code when the server gave one, and what we were
/// doing (subject, stream, consumer).
public struct NATSError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case connectionFailed, connectionClosed, timeout, noResponders, notFound, invalidArgument, jetStream, other
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No server in the list could be reached.
        public static let connectionFailed = Code(.connectionFailed)
        /// The connection is closed (or was closed during the call).
        public static let connectionClosed = Code(.connectionClosed)
        /// The operation did not complete in time.
        public static let timeout = Code(.timeout)
        /// Nobody answers on the subject (for JetStream: no stream captures it).
        public static let noResponders = Code(.noResponders)
        /// The stream, consumer or message does not exist.
        public static let notFound = Code(.notFound)
        /// An argument was rejected before anything was sent.
        public static let invalidArgument = Code(.invalidArgument)
        /// The JetStream API answered with an error.
        public static let jetStream = Code(.jetStream)
        /// Anything else.
        public static let other = Code(.other)

        public var description: String { base.rawValue }
    }

    public let code: Code
    /// The operation that failed, e.g. "publish" or "fetch".
    public let operation: String
    /// nats.c's status code (`natsStatus`).
    public let status: Int32
    /// nats.c's text for the status, with the library's last error detail.
    public let statusText: String
    /// The JetStream API error code (`jsErrCode`), 0 when none.
    public let jetStreamCode: Int32
    /// What the operation was about ("subject notifications.post.like").
    public let context: String?

    init(operation: String, status: natsStatus, jetStreamCode: jsErrCode = jsErrCode(rawValue: 0), context: String? = nil) {
        self.operation = operation
        self.status = Int32(status.rawValue)
        self.jetStreamCode = Int32(jetStreamCode.rawValue)
        self.context = context
        var text = String(cString: natsStatus_GetText(status))
        var last = NATS_OK
        if let detail = nats_GetLastError(&last) {
            let message = String(cString: detail)
            if !message.isEmpty, message != text { text += ": " + message }
        }
        self.statusText = text
        switch status {
        case NATS_NO_SERVER: code = .connectionFailed
        case NATS_CONNECTION_CLOSED, NATS_CONNECTION_DISCONNECTED, NATS_STALE_CONNECTION: code = .connectionClosed
        case NATS_TIMEOUT: code = .timeout
        case NATS_NO_RESPONDERS: code = .noResponders
        case NATS_NOT_FOUND: code = .notFound
        case NATS_INVALID_ARG, NATS_INVALID_SUBJECT, NATS_INVALID_TIMEOUT: code = .invalidArgument
        default: code = jetStreamCode.rawValue != 0 ? .jetStream : .other
        }
    }

    init(code: Code, operation: String, message: String, context: String? = nil) {
        self.code = code
        self.operation = operation
        self.status = 0
        self.statusText = message
        self.jetStreamCode = 0
        self.context = context
    }

    public var description: String {
        var text = "NATS \(operation) failed"
        if let context { text += " (\(context))" }
        text += ": \(statusText)"
        if jetStreamCode != 0 { text += " [JetStream error \(jetStreamCode)]" }
        return text
    }
}

/// Throws a ``NATSError`` unless `status` is `NATS_OK`.
@inline(__always)
func check(
    _ status: natsStatus, _ operation: @autoclosure () -> String,
    jetStreamCode: jsErrCode = jsErrCode(rawValue: 0), context: @autoclosure () -> String? = nil
) throws(NATSError) {
    if status != NATS_OK {
        throw NATSError(operation: operation(), status: status, jetStreamCode: jetStreamCode, context: context())
    }
}
