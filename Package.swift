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
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // C bridges.
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),

        // I/O-free core: configuration, errors, log keys.
        .target(name: "DeckhandCore", swiftSettings: strict),

        // Swift client over libcurl: requests, unix sockets, streaming, HTTP/2.
        .target(
            name: "HTTPClient",
            dependencies: [
                "CCurl",
                "DeckhandCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // Helpers for tests and benchmarks: service endpoints, unique names, a loopback HTTP server.
        .target(
            name: "DeckhandTesting",
            dependencies: [
                "DeckhandCore",
                "HTTPClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        .testTarget(name: "UnitTests", dependencies: ["DeckhandCore", "HTTPClient"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["HTTPClient", "DeckhandCore", "DeckhandTesting"],
            swiftSettings: strict
        ),
    ]
)
