// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "deckhand",
    platforms: [.macOS(.v15)],
    products: [],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // I/O-free core: configuration, errors, log keys.
        .target(name: "DeckhandCore", swiftSettings: strict),

        // C bridge to libpq (headers under /usr/include/postgresql, found through pkg-config).
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

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

        // Helpers for tests and benchmarks: service endpoints, unique names.
        .target(name: "DeckhandTesting", dependencies: ["DeckhandCore", "Postgres"], swiftSettings: strict),

        .testTarget(name: "UnitTests", dependencies: ["DeckhandCore", "Postgres"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["Postgres", "DeckhandStore", "DeckhandCore", "DeckhandTesting"],
            swiftSettings: strict
        ),
    ]
)
