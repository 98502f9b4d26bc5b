import AsyncHTTPClient
import JSON
import KeyValueStore
import Logging
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where and how to reach DynamoDB.
public struct DynamoDBConfiguration: Sendable {
    /// `http(s)://host[:port]`: AWS's regional endpoint, or a local
    /// emulator (`DYNAMODB_ENDPOINT`).
    public var endpoint: String
    public var region: String
    public var credentials: AWSCredentials
    public var tableName: String
    /// Attempts per request when DynamoDB throttles, fails with a 5xx or
    /// cannot be reached, with exponential backoff and jitter in between.
    public var maxAttempts: Int
    /// The wait before the second attempt; it doubles each time, up to
    /// ``maxBackoff``.
    public var baseBackoff: Duration
    public var maxBackoff: Duration
    /// How long one HTTP request may take.
    public var requestTimeout: Duration

    public init(
        endpoint: String? = nil,
        region: String,
        credentials: AWSCredentials,
        tableName: String,
        maxAttempts: Int = 8,
        baseBackoff: Duration = .milliseconds(25),
        maxBackoff: Duration = .seconds(2),
        requestTimeout: Duration = .seconds(10)
    ) {
        self.endpoint = endpoint ?? "https://dynamodb.\(region).amazonaws.com"
        self.region = region
        self.credentials = credentials
        self.tableName = tableName
        self.maxAttempts = max(1, maxAttempts)
        self.baseBackoff = baseBackoff
        self.maxBackoff = maxBackoff
        self.requestTimeout = requestTimeout
    }

    /// The wait before attempt `attempt + 1`: full jitter, a random share
    /// of ``baseBackoff`` × 2^(attempt-1), capped at ``maxBackoff``.
    func backoff(attempt: Int) -> Duration {
        min(baseBackoff * (1 << min(attempt - 1, 20)), maxBackoff) * Double.random(in: 0.1...1)
    }
}

extension DynamoDBConfiguration {
    /// The `host[:port]` of an `http://` or `https://` endpoint, as the
    /// `Host` header carries it; `nil` for anything else.
    public static func host(of endpoint: String) -> String? {
        for scheme in ["https://", "http://"] where endpoint.hasPrefix(scheme) {
            let authority = endpoint.dropFirst(scheme.count).prefix { $0 != "/" }
            return authority.isEmpty ? nil : String(authority)
        }
        return nil
    }
}

/// An error DynamoDB answered with (`__type` and message), before it is
/// mapped to a ``KeyValueStoreError``.
struct DynamoDBServiceError: Sendable {
    let status: Int
    /// The exception name, such as `ConditionalCheckFailedException`.
    let type: String
    let message: String
    let body: JSONValue?

    var isRetryable: Bool {
        if status >= 500 { return true }
        return [
            "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
            "LimitExceededException", "TransactionInProgressException", "InternalServerError",
            "ServiceUnavailable",
        ].contains(type)
    }
}

/// Sends signed DynamoDB API calls and retries what is worth retrying.
struct DynamoDBClient: Sendable {
    let configuration: DynamoDBConfiguration
    let logger: Logger
    private let signer: SignatureV4
    private let host: String

    init(configuration: DynamoDBConfiguration, logger: Logger) throws(KeyValueStoreError) {
        self.configuration = configuration
        self.logger = logger
        signer = SignatureV4(credentials: configuration.credentials, region: configuration.region, service: "dynamodb")
        guard let host = DynamoDBConfiguration.host(of: configuration.endpoint) else {
            throw KeyValueStoreError(
                code: .validation,
                message: "DYNAMODB_ENDPOINT '\(configuration.endpoint)' is not an http:// or https:// URL with a host")
        }
        self.host = host
    }

    /// Calls `operation` (`PutItem`, `TransactWriteItems`, …) with `request`,
    /// retrying throttling, 5xx and connection failures; returns the response
    /// body or throws the service's error (after the last attempt for
    /// retryable ones).
    func call(_ operation: String, _ request: [String: JSONValue]) async throws(DynamoDBCallError) -> JSONValue {
        var writer = JSONWriter(capacity: 1024)
        writer.value(.object(request))
        let body = writer.bytes
        var attempt = 1
        while true {
            let outcome = await send(operation, body: body)
            switch outcome {
            case .success(let response):
                return response
            case .failure(let error):
                guard error.isRetryable, attempt < configuration.maxAttempts else { throw error }
                let delay = configuration.backoff(attempt: attempt)
                logger.debug("DynamoDB call failed; retrying", metadata: [
                    "operation": .string(operation), "attempt": .stringConvertible(attempt),
                    "error": .string(error.description), "delay": .stringConvertible(delay),
                ])
                try? await Task.sleep(for: delay)
                attempt += 1
            }
        }
    }

    private func send(_ operation: String, body: [UInt8]) async -> Result<JSONValue, DynamoDBCallError> {
        var request = HTTPClientRequest(url: configuration.endpoint)
        request.method = .POST
        var headers: [(String, String)] = [
            ("Host", host),
            ("Content-Type", "application/x-amz-json-1.0"),
            ("X-Amz-Target", "DynamoDB_20120810." + operation),
        ]
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        headers += signer.signingHeaders(method: "POST", path: "/", headers: headers, body: body, date: Int64(now.tv_sec))
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))

        let status: Int
        var buffer: ByteBuffer
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: TimeAmount(configuration.requestTimeout))
            status = Int(response.status.code)
            buffer = try await response.body.collect(upTo: 64 << 20)
        } catch {
            return .failure(.transport("\(operation) to \(configuration.endpoint) failed: \(error)"))
        }
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        let parsed = bytes.isEmpty ? nil : try? JSONParser.parse(bytes)
        if status == 200, let parsed { return .success(parsed) }
        if status == 200 {
            return .failure(.service(DynamoDBServiceError(status: status, type: "MalformedResponse", message: "\(operation) answered with a body that is not JSON", body: nil)))
        }
        let typeName = parsed?["__type"]?.stringValue ?? "HTTP\(status)"
        let type = typeName.split(separator: "#").last.map(String.init) ?? typeName
        let message = parsed?["message"]?.stringValue ?? parsed?["Message"]?.stringValue
            ?? String(decoding: bytes.prefix(300), as: UTF8.self)
        return .failure(.service(DynamoDBServiceError(status: status, type: type, message: message, body: parsed)))
    }
}

/// Why a call failed: DynamoDB answered with an error, or it could not be
/// reached.
enum DynamoDBCallError: Error, Sendable, CustomStringConvertible {
    case service(DynamoDBServiceError)
    case transport(String)

    var isRetryable: Bool {
        switch self {
        case .service(let error): error.isRetryable
        case .transport: true
        }
    }

    var description: String {
        switch self {
        case .service(let error): "\(error.type) (HTTP \(error.status)): \(error.message)"
        case .transport(let message): message
        }
    }
}
