/// An error from a ``KeyValueStore``.
///
/// Match on ``code``; ``description`` says what happened in words an
/// operator can act on.
public struct KeyValueStoreError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case conditionalCheckFailed, transactionCanceled, validation, unavailable, corrupt, incompatible, internalError
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A single write's condition did not hold; nothing was written.
        public static let conditionalCheckFailed = Code(.conditionalCheckFailed)
        /// A transaction was rolled back because some condition did not
        /// hold; ``KeyValueStoreError/cancellationReasons`` says which.
        public static let transactionCanceled = Code(.transactionCanceled)
        /// The request itself is invalid (same item twice in a transaction,
        /// ADD on a non-integer, …). Retrying will not help.
        public static let validation = Code(.validation)
        /// The store cannot serve the request now (busy, locked, disk full,
        /// I/O error). Retrying later may succeed.
        public static let unavailable = Code(.unavailable)
        /// The stored data is damaged or is not a store of ours.
        public static let corrupt = Code(.corrupt)
        /// The stored data was written by an incompatible version.
        public static let incompatible = Code(.incompatible)
        /// Anything else.
        public static let internalError = Code(.internalError)

        public var description: String { base.rawValue }
    }

    /// Why one action of a transaction cancelled it.
    public enum CancellationReason: Sendable, Hashable {
        /// This action's condition held (or it had none).
        case none
        /// This action's condition did not hold.
        case conditionalCheckFailed
    }

    public let code: Code
    public let message: String
    /// For ``Code/transactionCanceled``: one reason per action, in order.
    public let cancellationReasons: [CancellationReason]

    public init(code: Code, message: String, cancellationReasons: [CancellationReason] = []) {
        self.code = code
        self.message = message
        self.cancellationReasons = cancellationReasons
    }

    /// Indices of the transaction actions whose condition failed.
    public var failedActionIndices: [Int] {
        cancellationReasons.indices.filter { cancellationReasons[$0] == .conditionalCheckFailed }
    }

    /// Whether the failure came from a condition (single write or
    /// transaction), i.e. from concurrent changes rather than from the store.
    public var isConditionFailure: Bool {
        code == .conditionalCheckFailed || code == .transactionCanceled
    }

    /// Whether the store itself failed (unreachable, full, locked, damaged),
    /// so any request would fail now, not just this one.
    public var isStoreFault: Bool {
        code == .unavailable || code == .corrupt
    }

    public var description: String {
        switch code {
        case .transactionCanceled:
            return "transaction cancelled: condition failed on action(s) \(failedActionIndices): \(message)"
        default:
            return "\(code): \(message)"
        }
    }

    static func validation(_ message: String) -> KeyValueStoreError {
        KeyValueStoreError(code: .validation, message: message)
    }

    static func conditionFailed(_ key: ItemKey) -> KeyValueStoreError {
        KeyValueStoreError(code: .conditionalCheckFailed, message: "the condition on \(key) did not hold")
    }
}
