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

    public init() {}

    /// The `resource_factor`s OpenHands' Runtime API offers.
    public static let resourceFactors = [1, 2, 4, 8]

    static let keys: Set<String> = [
        "runtime_api.host", "runtime_api.port", "runtime_api.start_timeout", "runtime_api.max_live_runtimes",
        "runtime_api.registry_prefix", "runtime_api.key_cache_ttl",
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
    }
}
