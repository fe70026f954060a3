import Foundation

/// How `deckhand runtime-api` serves OpenHands' Remote Runtime API (`runtime_api.*` keys).
public struct RuntimeAPISettings: Sendable {
    /// `runtime_api.host`: the address to listen on.
    public var host: String = "127.0.0.1"
    /// `runtime_api.port`: the port to listen on (0: any free port).
    public var port: Int = 3010
    /// `runtime_api.start_timeout`: how long `POST /start` waits for the sandbox to answer before it answers
    /// 503 (the start goes on; a later `/start` or `/sessions` of the session finds it).
    public var startTimeout: Duration = .seconds(120)
    /// `runtime_api.max_live_runtimes`: runtimes (starting, running or paused) one user's keys may hold; a
    /// `/start` of a new one beyond it is a 429 (0: no limit).
    public var maxLiveRuntimes: Int = 10
    /// `runtime_api.registry_prefix`: what `GET /registry_prefix` answers.
    public var registryPrefix: String = "deckhand"
    /// `runtime_api.key_cache_ttl`: how long a checked key is trusted without asking PostgreSQL again.
    public var keyCacheTTL: Duration = .seconds(10)
    /// `runtime_api.image_map`: what serves a requested image, first matching rule first (``ImageRule``).
    public var imageMap: [ImageRule] = ImageRule.defaults

    public init() {}

    /// One rule of `runtime_api.image_map`, `pattern=target`: an image reference matching `pattern` (`*` stands
    /// for any run of characters) is served by Deckhand's sandbox image (`sandbox`: the caller's `command` and
    /// `working_dir` are not run, Deckhand's server speaks their protocol), or runs as given (`as-given[:port]`:
    /// the image with the caller's `command` and `working_dir`, its server on `port`, 60000 unless named, where
    /// the runtime workers' backend can run images — Docker, or another Runtime API).
    public struct ImageRule: Sendable, Equatable {
        public enum Target: Sendable, Equatable {
            case sandbox
            case asGiven(port: Int)
        }

        public var pattern: String
        public var target: Target

        public init(_ pattern: String, _ target: Target) {
            self.pattern = pattern
            self.target = target
        }

        /// The port OpenHands' `RemoteRuntime` starts its action-execution server on.
        public static let openHandsPort = 60000

        /// Deckhand's own sandbox image (what another Deckhand's `remote` backend asks for) and OpenHands'
        /// published runtime images go to Deckhand's sandbox image; any other image runs as given.
        public static let defaults: [ImageRule] = [
            ImageRule("deckhand/sandbox*", .sandbox),
            ImageRule("ghcr.io/openhands/runtime:*", .sandbox),
            ImageRule("ghcr.io/all-hands-ai/runtime:*", .sandbox),
            ImageRule("docker.all-hands.dev/all-hands-ai/runtime:*", .sandbox),
            ImageRule("docker.all-hands.dev/openhands/runtime:*", .sandbox),
            ImageRule("*", .asGiven(port: openHandsPort)),
        ]

        /// Whether `image` matches `pattern` (`*`: any run of characters, possibly empty).
        public func matches(_ image: String) -> Bool {
            var parts = pattern.split(separator: "*", omittingEmptySubsequences: false)[...]
            var rest = Substring(image)
            guard let first = parts.popFirst(), rest.hasPrefix(first) else { return false }
            rest = rest.dropFirst(first.count)
            guard let last = parts.popLast() else { return rest.isEmpty }
            for part in parts where !part.isEmpty {
                guard let found = rest.range(of: part) else { return false }
                rest = rest[found.upperBound...]
            }
            return rest.count >= last.count && rest.hasSuffix(last)
        }

        /// Parses `pattern=sandbox|as-given[:port], …` (commas or new lines between rules).
        static func parse(_ text: String) -> [ImageRule]? {
            var rules: [ImageRule] = []
            for item in text.split(whereSeparator: { $0 == "," || $0 == "\n" }) {
                let rule = item.trimmingWhitespace()
                if rule.isEmpty { continue }
                guard let equals = rule.lastIndex(of: "=") else { return nil }
                let pattern = rule[..<equals].trimmingWhitespace()
                let target = rule[rule.index(after: equals)...].trimmingWhitespace()
                guard !pattern.isEmpty else { return nil }
                if target == "sandbox" {
                    rules.append(ImageRule(pattern, .sandbox))
                } else if target == "as-given" {
                    rules.append(ImageRule(pattern, .asGiven(port: openHandsPort)))
                } else if target.hasPrefix("as-given:"), let port = Int(target.dropFirst("as-given:".count)),
                    (1...65_535).contains(port)
                {
                    rules.append(ImageRule(pattern, .asGiven(port: port)))
                } else {
                    return nil
                }
            }
            return rules.isEmpty ? nil : rules
        }
    }

    /// What serves `image`: the first matching rule's target; Deckhand's sandbox image when none matches.
    public func target(for image: String) -> ImageRule.Target {
        imageMap.first { $0.matches(image) }?.target ?? .sandbox
    }

    /// The `resource_factor`s OpenHands' Runtime API offers.
    public static let resourceFactors = [1, 2, 4, 8]

    static let keys: Set<String> = [
        "runtime_api.host", "runtime_api.port", "runtime_api.start_timeout", "runtime_api.max_live_runtimes",
        "runtime_api.registry_prefix", "runtime_api.key_cache_ttl", "runtime_api.image_map",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        host = reader.string("runtime_api.host", default: host)
        port = try reader.int("runtime_api.port", default: port, range: 0...65_535)
        startTimeout = try reader.duration("runtime_api.start_timeout", default: startTimeout, minimum: .seconds(1))
        maxLiveRuntimes = try reader.int(
            "runtime_api.max_live_runtimes",
            default: maxLiveRuntimes,
            range: 0...1_000_000
        )
        registryPrefix = reader.string("runtime_api.registry_prefix", default: registryPrefix)
        keyCacheTTL = try reader.duration("runtime_api.key_cache_ttl", default: keyCacheTTL)
        if let text = reader.optionalString("runtime_api.image_map") {
            guard let rules = ImageRule.parse(text) else {
                throw reader.invalid(
                    "runtime_api.image_map",
                    expected: "a comma-separated list of pattern=sandbox or pattern=as-given[:port], "
                        + "such as `ghcr.io/openhands/runtime:*=sandbox, *=as-given:60000`",
                    got: text
                )
            }
            imageMap = rules
        }
    }
}
