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
        // NIOThreadPool: the threads that run blocking libpq calls off the cooperative pool.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // I/O-free core: configuration, errors, log keys.
        .target(name: "DeckhandCore", swiftSettings: strict),

        // C bridges: system libraries plus typed shims for their variadic calls.
        .systemLibrary(name: "CRabbitMQ", pkgConfig: "librabbitmq", providers: [.apt(["librabbitmq-dev"])]),
        // libpq's headers are under /usr/include/postgresql, found through pkg-config.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // AMQP 0-9-1 client over librabbitmq: one thread per connection, confirms, consumers, reconnect.
        .target(
            name: "AMQP",
            dependencies: ["CRabbitMQ", "DeckhandCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),

        // Swift client over libpq: pool, parameters, transactions, pipeline, LISTEN/NOTIFY, migrations.
        .target(
            name: "Postgres",
            dependencies: [
                "CLibPQ",
                "DeckhandCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),

        // Deckhand's database schema (numbered SQL migrations) on top of Postgres.
        .target(
            name: "DeckhandStore",
            dependencies: ["Postgres", "DeckhandCore"],
            resources: [.copy("Migrations")],
            swiftSettings: strict
        ),

        .executableTarget(
            name: "deckhand",
            dependencies: [
                "AMQP", "Postgres", "DeckhandStore", "DeckhandCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // Helpers for tests and benchmarks: service endpoints, unique names, fault injection.
        .target(
            name: "DeckhandTesting",
            dependencies: ["DeckhandCore", "AMQP", "Postgres"],
            swiftSettings: strict
        ),

        // Benchmarks, run on demand (bench/README.md); never part of the test command.
        .executableTarget(
            name: "deckhand-bench",
            dependencies: [
                "AMQP", "Postgres", "DeckhandCore", "DeckhandTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "bench/Sources",
            swiftSettings: strict
        ),

        .testTarget(
            name: "UnitTests",
            dependencies: ["DeckhandCore", "AMQP", "Postgres", "DeckhandStore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["AMQP", "Postgres", "DeckhandStore", "DeckhandCore", "DeckhandTesting"],
            swiftSettings: strict
        ),
    ]
)
