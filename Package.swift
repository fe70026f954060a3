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

        // Helpers for tests and benchmarks: service endpoints, unique names.
        .target(name: "DeckhandTesting", dependencies: ["DeckhandCore"], swiftSettings: strict),

        .testTarget(name: "UnitTests", dependencies: ["DeckhandCore", "HTTPClient"], swiftSettings: strict),
    ]
)
