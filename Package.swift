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
    dependencies: [],
    targets: [
        // I/O-free core: configuration, errors, log keys.
        .target(name: "DeckhandCore", swiftSettings: strict),

        // Helpers for tests and benchmarks: service endpoints, unique names.
        .target(name: "DeckhandTesting", dependencies: ["DeckhandCore"], swiftSettings: strict),

        .testTarget(name: "UnitTests", dependencies: ["DeckhandCore"], swiftSettings: strict),
    ]
)
