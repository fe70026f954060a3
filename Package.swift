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
        .executable(name: "deckhand", targets: ["deckhand"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // I/O-free core: configuration, errors, log keys.
        .target(name: "DeckhandCore", swiftSettings: strict),

        // C bridge: librabbitmq plus typed shims for its variadic calls.
        .systemLibrary(name: "CRabbitMQ", pkgConfig: "librabbitmq", providers: [.apt(["librabbitmq-dev"])]),

        // AMQP 0-9-1 client over librabbitmq: one thread per connection, confirms, consumers, reconnect.
        .target(
            name: "AMQP",
            dependencies: ["CRabbitMQ", "DeckhandCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),

        .executableTarget(
            name: "deckhand",
            dependencies: [
                "AMQP", "DeckhandCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // Helpers for tests and benchmarks: service endpoints, unique names.
        .target(name: "DeckhandTesting", dependencies: ["DeckhandCore", "AMQP"], swiftSettings: strict),

        // Benchmarks, run on demand (bench/README.md); never part of the test command.
        .executableTarget(
            name: "deckhand-bench",
            dependencies: [
                "AMQP", "DeckhandCore", "DeckhandTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "bench/Sources",
            swiftSettings: strict
        ),

        .testTarget(name: "UnitTests", dependencies: ["DeckhandCore", "AMQP"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["AMQP", "DeckhandCore", "DeckhandTesting"],
            swiftSettings: strict
        ),
    ]
)
