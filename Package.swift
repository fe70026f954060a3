// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "deckhand",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "deckhand", targets: ["deckhand"]),
        .executable(name: "deckhand-sandbox", targets: ["deckhand-sandbox"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // Step timings and counters (exported in Prometheus format by the gateway's /metrics, later).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        // NIOThreadPool: the threads that run blocking libpq calls off the cooperative pool.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // The loopback HTTP server the HTTP client's integration tests talk to (and, later, the gateway).
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // The gateway's live event streams: WebSocket upgrades on Hummingbird, and a client for the tests.
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        // The gateway's /metrics: a Prometheus registry (and the swift-metrics backend of deckhand's processes).
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // SHA-256 of API keys (only the hash is stored).
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        // I/O-free core: configuration, errors, log keys.
        .target(name: "DeckhandCore", swiftSettings: strict),

        // C bridges: system libraries plus typed shims for their variadic calls.
        .systemLibrary(name: "CRabbitMQ", pkgConfig: "librabbitmq", providers: [.apt(["librabbitmq-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        // libpq's headers are under /usr/include/postgresql, found through pkg-config.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // Small POSIX primitives the client modules share (the wake-up pipe of their I/O threads).
        .target(name: "DeckhandPOSIX", dependencies: ["DeckhandCore"], swiftSettings: strict),

        // AMQP 0-9-1 client over librabbitmq: one thread per connection, confirms, consumers, reconnect.
        .target(
            name: "AMQP",
            dependencies: [
                "CRabbitMQ", "DeckhandCore", "DeckhandPOSIX", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // Swift client over libcurl: one curl_multi thread, whole and streamed responses, unix sockets, HTTP/2.
        .target(
            name: "HTTPClient",
            dependencies: ["CCurl", "DeckhandCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),

        // Swift client over libpq: pool, parameters, transactions, pipeline, LISTEN/NOTIFY, migrations.
        .target(
            name: "Postgres",
            dependencies: [
                "CLibPQ",
                "DeckhandCore",
                "DeckhandPOSIX",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),

        // Deckhand's database schema (numbered SQL migrations) on top of Postgres.
        .target(
            name: "DeckhandStore",
            dependencies: ["Postgres", "DeckhandCore", .product(name: "Crypto", package: "swift-crypto")],
            resources: [.copy("Migrations")],
            swiftSettings: strict
        ),

        // Deckhand's exchanges and queues, and the command/event publishing every role shares (DESIGN §2).
        .target(
            name: "Messaging",
            dependencies: [
                "AMQP", "DeckhandCore", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // Sandbox backends (DESIGN §7): Docker over the Engine API, and child processes (a fork/exec in C that
        // resets signals and hands the child a lifeline pipe).
        .target(name: "CProcessSpawn"),
        .target(
            name: "RuntimeBackends",
            dependencies: [
                "CProcessSpawn", "DeckhandCore", "DeckhandPOSIX", "GRPC", "HTTPClient", "Modal",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),

        // gRPC over the HTTP client (HTTP/2, trailers) with a protobuf wire codec for hand-written messages.
        .target(
            name: "GRPC",
            dependencies: ["DeckhandCore", "HTTPClient"],
            swiftSettings: strict
        ),
        // Modal's API (gRPC): the messages and calls of the `modal` backend (../shared/MODAL.md).
        .target(
            name: "Modal",
            dependencies: ["DeckhandCore", "GRPC", "HTTPClient", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),

        // OpenAI-compatible Chat Completions over the HTTP client: tool calling, retries, failure classes (DESIGN §8).
        .target(
            name: "LLM",
            dependencies: ["DeckhandCore", "HTTPClient", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),

        // The agent without I/O: CodeAct tools, system prompt, model responses to actions, the history rebuilt
        // from events, condensation, stuck detection, replay.
        .target(name: "Agent", dependencies: ["DeckhandCore", "LLM"], swiftSettings: strict),

        // The conversation worker: the agent loop as stateless steps over conversation.commands (DESIGN §4).
        .target(
            name: "ConversationWorker",
            dependencies: [
                "AMQP", "Agent", "DeckhandCore", "DeckhandStore", "HTTPClient", "LLM", "Messaging", "Postgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // The runtime-manager worker: provisioning from runtime.commands, the warm pool, idle timers, reconciliation.
        .target(
            name: "RuntimeManager",
            dependencies: [
                "AMQP", "DeckhandCore", "DeckhandStore", "HTTPClient", "Messaging", "Postgres", "RuntimeBackends",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // The gateway: the OpenHands-compatible HTTP API, API keys, live event streams (DESIGN §6).
        .target(
            name: "Gateway",
            dependencies: [
                "AMQP", "DeckhandCore", "DeckhandStore", "HTTPClient", "Messaging", "Postgres",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        .executableTarget(
            name: "deckhand",
            dependencies: [
                "AMQP", "HTTPClient", "Postgres", "DeckhandStore", "DeckhandCore", "Messaging", "RuntimeBackends",
                "RuntimeManager", "ConversationWorker", "Gateway",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // The sandbox server (PROTOCOL.md §C): a PTY spawner in C, the server library, its own small executable.
        .target(name: "CSandboxPTY", linkerSettings: [.linkedLibrary("util")]),
        .target(
            name: "SandboxServer",
            dependencies: [
                "CSandboxPTY", "DeckhandCore", "DeckhandPOSIX", "HTTPClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "deckhand-sandbox",
            dependencies: [
                "SandboxServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // Helpers for tests and benchmarks: service endpoints, unique names, fault injection, a loopback HTTP server.
        .target(
            name: "DeckhandTesting",
            dependencies: [
                "DeckhandCore", "AMQP", "HTTPClient", "Postgres", "SandboxServer", "DeckhandStore", "Messaging",
                "RuntimeBackends", "RuntimeManager", "LLM", "Agent", "ConversationWorker", "Gateway",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // Benchmarks, run on demand (bench/README.md); never part of the test command.
        .executableTarget(
            name: "deckhand-bench",
            dependencies: [
                "AMQP", "HTTPClient", "Postgres", "DeckhandCore", "DeckhandTesting", "DeckhandStore", "Messaging",
                "RuntimeBackends", "RuntimeManager", "ConversationWorker", "Gateway",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "bench/Sources",
            swiftSettings: strict
        ),

        .testTarget(
            name: "UnitTests",
            dependencies: [
                "DeckhandCore", "LLM", "Agent", "AMQP", "HTTPClient", "Postgres", "DeckhandStore", "SandboxServer",
                "Messaging", "RuntimeBackends", "RuntimeManager", "ConversationWorker", "Gateway", "GRPC", "Modal",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Golden bytes the tests read from the source tree (scripts/modal/golden.py writes them).
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "AMQP", "HTTPClient", "Postgres", "DeckhandStore", "DeckhandCore", "DeckhandTesting", "SandboxServer",
                "Messaging", "RuntimeBackends", "RuntimeManager", "LLM", "Agent", "ConversationWorker", "Gateway",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
    ]
)
