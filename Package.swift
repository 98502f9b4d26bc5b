// swift-tools-version: 6.2
import PackageDescription

/// One flag set for every target: Swift 6 language mode plus the upcoming
/// features that keep module boundaries honest.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "notify",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "notify", targets: ["notify"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.34.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        // Fuzzing harnesses (`make fuzz`); built normally they replay a corpus.
        .target(name: "CFuzzer", path: "Fuzz/CFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzer"], path: "Fuzz/FuzzSupport", swiftSettings: swiftSettings),
        .executableTarget(
            name: "EventFuzzer", dependencies: ["FuzzSupport", "Notifications"],
            path: "Fuzz/EventFuzzer", swiftSettings: swiftSettings),
        .executableTarget(
            name: "TokenFuzzer", dependencies: ["FuzzSupport", "Gateway", "Notifications"],
            path: "Fuzz/TokenFuzzer", swiftSettings: swiftSettings),

        // C libraries, each wrapped by exactly one Swift target.
        .systemLibrary(name: "CNATS", pkgConfig: "libnats", providers: [.apt(["libnats-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),

        .target(
            name: "NATS",
            dependencies: ["CNATS"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "KeyValueStore",
            swiftSettings: swiftSettings
        ),
        // A strict JSON parser and a byte writer, shared by the event
        // decoder, the gateway and the DynamoDB wire format.
        .target(
            name: "JSON",
            swiftSettings: swiftSettings
        ),
        // The only Swift that speaks DynamoDB's HTTP API (AWS Signature V4).
        .target(
            name: "DynamoDBStore",
            dependencies: [
                "KeyValueStore",
                "JSON",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SQLiteStore",
            dependencies: ["CSQLite", "KeyValueStore"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Notifications",
            dependencies: [
                "NATS",
                "KeyValueStore",
                "JSON",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The Mustache templates of every kind and channel (defaults and
        // `TEMPLATES_DIR`), checked when they load.
        .target(
            name: "Templates",
            dependencies: [
                "Notifications",
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            swiftSettings: swiftSettings
        ),
        // `notify dispatcher`: delivery jobs on JetStream, sent by email
        // (SMTP), Web Push and webhooks.
        .target(
            name: "Delivery",
            dependencies: [
                "NATS",
                "Notifications",
                "Templates",
                "JSON",
                "KeyValueStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Gateway",
            dependencies: [
                "NATS",
                "Notifications",
                "JSON",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "notify",
            dependencies: [
                "NATS",
                "JSON",
                "KeyValueStore",
                "SQLiteStore",
                "DynamoDBStore",
                "Notifications",
                "Gateway",
                "Templates",
                "Delivery",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // nats-server and notify as child processes, and a loopback socket for
        // raw clients: for the benchmark, the chaos suite and the tests.
        .target(
            name: "ProcessSupport",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "NotifyBenchmark",
            dependencies: [
                "NATS",
                "ProcessSupport",
                "KeyValueStore",
                "SQLiteStore",
                "Gateway",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                "Notifications",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // `make chaos`: fault injection against real processes;
        // `make cluster-test`: the same against a 3-node NATS cluster and DynamoDB.
        .executableTarget(
            name: "NotifyChaos",
            dependencies: [
                "NATS",
                "KeyValueStore",
                "SQLiteStore",
                "DynamoDBStore",
                "ProcessSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // Tests
        .target(
            name: "TestSupport",
            dependencies: ["KeyValueStore", "SQLiteStore", "DynamoDBStore", "ProcessSupport"],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "KeyValueStoreTests",
            dependencies: ["KeyValueStore", "SQLiteStore", "DynamoDBStore", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DynamoDBStoreTests",
            dependencies: ["DynamoDBStore", "KeyValueStore", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "NATSTests",
            dependencies: ["NATS", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "NotificationsTests",
            dependencies: ["Notifications", "JSON", "NATS", "KeyValueStore", "SQLiteStore", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway", "Notifications", "NATS", "SQLiteStore", "KeyValueStore", "TestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DeliveryTests",
            dependencies: [
                "Delivery", "Templates", "Notifications", "NATS", "KeyValueStore", "SQLiteStore", "TestSupport", "ProcessSupport", "JSON",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "NotifyCommandTests",
            dependencies: ["notify", "NATS", "SQLiteStore", "DynamoDBStore", "KeyValueStore", "Notifications", "Gateway", "ProcessSupport", "TestSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
