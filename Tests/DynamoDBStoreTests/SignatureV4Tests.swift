@testable import DynamoDBStore
import Testing

/// Signatures checked against botocore's `SigV4Auth` (the AWS SDK for
/// Python) for the same request, credentials and time.
@Suite("Signature V4")
struct SignatureV4Tests {
    static let headers = [
        ("Host", "127.0.0.1:8000"),
        ("Content-Type", "application/x-amz-json-1.0"),
        ("X-Amz-Target", "DynamoDB_20120810.DescribeTable"),
    ]
    static let body = Array(#"{"TableName":"notifications"}"#.utf8)
    static let date: Int64 = 1_795_264_496  // 2026-11-21 12:34:56 UTC

    static func signer(token: String? = nil) -> SignatureV4 {
        SignatureV4(
            credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", sessionToken: token),
            region: "eu-west-1", service: "dynamodb")
    }

    @Test func signsAsTheAWSSDKDoes() {
        let added = Self.signer().signingHeaders(method: "POST", path: "/", headers: Self.headers, body: Self.body, date: Self.date)
        #expect(added.map(\.0) == ["X-Amz-Date", "Authorization"])
        #expect(added[0].1 == "20261121T123456Z")
        #expect(added[1].1 == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261121/eu-west-1/dynamodb/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=2ed18e9ec4db02a5a43d81f045af8b7dba38cc774efd05bc8bac4ed21dfeb078")
    }

    @Test func signsTheSessionTokenOfTemporaryCredentials() {
        let added = Self.signer(token: "session-token-1").signingHeaders(
            method: "POST", path: "/", headers: Self.headers, body: Self.body, date: Self.date)
        #expect(added.map(\.0) == ["X-Amz-Date", "X-Amz-Security-Token", "Authorization"])
        #expect(added[1].1 == "session-token-1")
        #expect(added[2].1 == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261121/eu-west-1/dynamodb/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=970b68919892d5ca0007bc0a764c07618e43f334008257e400744e9b5fa84cd4")
    }

    @Test func anotherBodyGivesAnotherSignature() {
        let one = Self.signer().signingHeaders(method: "POST", path: "/", headers: Self.headers, body: Self.body, date: Self.date)
        let two = Self.signer().signingHeaders(method: "POST", path: "/", headers: Self.headers, body: Self.body + [0x20], date: Self.date)
        #expect(one.last?.1 != two.last?.1)
    }

    @Test func credentialsComeFromTheEnvironment() {
        #expect(AWSCredentials.fromEnvironment([:]) == nil)
        #expect(AWSCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": ""]) == nil)
        let credentials = AWSCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_SESSION_TOKEN": "c"])
        #expect(credentials == AWSCredentials(accessKeyID: "a", secretAccessKey: "b", sessionToken: "c"))
    }

    @Test func theHostHeaderKeepsANonDefaultPort() {
        #expect(DynamoDBConfiguration.host(of: "http://127.0.0.1:8000") == "127.0.0.1:8000")
        #expect(DynamoDBConfiguration.host(of: "https://dynamodb.eu-west-1.amazonaws.com/") == "dynamodb.eu-west-1.amazonaws.com")
        #expect(DynamoDBConfiguration.host(of: "dynamodb.local:8000") == nil)
        #expect(DynamoDBConfiguration.host(of: "http://") == nil)
    }
}
