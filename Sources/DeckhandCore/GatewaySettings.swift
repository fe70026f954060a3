/// How the gateway serves the HTTP API (`gateway.*` keys).
public struct GatewaySettings: Sendable {
    /// How requests are authenticated.
    public enum AuthMode: String, Sendable, CaseIterable {
        /// `Authorization: Bearer <key>` checked against `api_keys` (the default).
        case apiKey = "api_key"
        /// Every request is the user `gateway.single_user`, with no key: for one person on a laptop only.
        case singleUser = "single_user"
    }

    /// `gateway.host`: the address to listen on.
    public var host: String = "127.0.0.1"
    /// `gateway.port`: the port to listen on (0: any free port).
    public var port: Int = 3000
    /// `gateway.auth`: `api_key` or `single_user`.
    public var auth: AuthMode = .apiKey
    /// `gateway.single_user`: the user every request is in `single_user` mode (created if missing).
    public var singleUser: String = "local"
    /// `gateway.max_body`: the largest JSON request body in bytes (413 above it).
    public var maxBodyBytes: Int = 1 << 20
    /// `gateway.max_upload`: the largest `upload-files` body in bytes (413 above it).
    public var maxUploadBytes: Int = 64 << 20
    /// `gateway.stream_buffer`: events a slow stream client may fall behind before it is closed.
    public var streamBuffer: Int = 1024
    /// `gateway.files_timeout`: how long a workspace-file request may wait for its answer (504 after it).
    public var filesTimeout: Duration = .seconds(15)
    /// `gateway.key_cache_ttl`: how long a checked API key is trusted without asking PostgreSQL again (a
    /// revoked key stops working within this time on every gateway).
    public var keyCacheTTL: Duration = .seconds(10)
    /// `gateway.retry_after`: the `Retry-After` seconds of a 503 while RabbitMQ or PostgreSQL is down.
    public var retryAfterSeconds: Int = 2
    /// `gateway.max_running_conversations`: conversations one user may have at work (loading or running) at
    /// once; a new one beyond it is a 429 (0: no limit).
    public var maxRunningConversations: Int = 10
    /// `gateway.max_live_sandboxes`: sandboxes (starting, running or paused) one user's conversations may hold;
    /// creating or starting a conversation beyond it is a 429 (0: no limit).
    public var maxLiveSandboxes: Int = 10
    /// `gateway.max_streams_per_user`: WebSocket and SSE streams one user may hold open on one gateway (0: no
    /// limit).
    public var maxStreamsPerUser: Int = 50
    /// `gateway.auth_failure_limit`: wrong keys one client address may present in a minute before its
    /// unknown keys are refused with 429 for the rest of it (0: no limit).
    public var authFailureLimit: Int = 30
    /// `gateway.allowed_origins`: the web origins (`https://app.example.com`) whose pages may call the API;
    /// a request or WebSocket upgrade with any other `Origin` is refused (403). Empty: no page may.
    public var allowedOrigins: Set<String> = []

    public init() {}

    static let keys: Set<String> = [
        "gateway.host", "gateway.port", "gateway.auth", "gateway.single_user", "gateway.max_body",
        "gateway.max_upload", "gateway.stream_buffer", "gateway.files_timeout", "gateway.key_cache_ttl",
        "gateway.retry_after", "gateway.max_running_conversations", "gateway.max_live_sandboxes",
        "gateway.allowed_origins", "gateway.max_streams_per_user", "gateway.auth_failure_limit",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        host = reader.string("gateway.host", default: host)
        port = try reader.int("gateway.port", default: port, range: 0...65_535)
        let mode = try reader.choice(
            "gateway.auth",
            default: auth.rawValue,
            choices: AuthMode.allCases.map(\.rawValue)
        )
        auth = AuthMode(rawValue: mode) ?? .apiKey
        singleUser = reader.string("gateway.single_user", default: singleUser)
        if singleUser.isEmpty || singleUser.count > 100 {
            throw reader.invalid("gateway.single_user", expected: "a user name of 1 to 100 characters", got: singleUser)
        }
        maxBodyBytes = try Self.size(reader, "gateway.max_body", default: maxBodyBytes)
        maxUploadBytes = try Self.size(reader, "gateway.max_upload", default: maxUploadBytes)
        streamBuffer = try reader.int("gateway.stream_buffer", default: streamBuffer, range: 1...1_000_000)
        filesTimeout = try reader.duration("gateway.files_timeout", default: filesTimeout, minimum: .milliseconds(10))
        keyCacheTTL = try reader.duration("gateway.key_cache_ttl", default: keyCacheTTL)
        retryAfterSeconds = try reader.int("gateway.retry_after", default: retryAfterSeconds, range: 1...3600)
        maxRunningConversations = try reader.int(
            "gateway.max_running_conversations",
            default: maxRunningConversations,
            range: 0...1_000_000
        )
        maxLiveSandboxes = try reader.int("gateway.max_live_sandboxes", default: maxLiveSandboxes, range: 0...1_000_000)
        maxStreamsPerUser = try reader.int(
            "gateway.max_streams_per_user",
            default: maxStreamsPerUser,
            range: 0...1_000_000
        )
        authFailureLimit = try reader.int("gateway.auth_failure_limit", default: authFailureLimit, range: 0...1_000_000)
        if let text = reader.optionalString("gateway.allowed_origins") {
            var origins: Set<String> = []
            for item in text.split(separator: ",") {
                let origin = String(item.trimmingWhitespace())
                guard !origin.isEmpty else { continue }
                guard origin.hasPrefix("http://") || origin.hasPrefix("https://"), !origin.dropFirst(8).contains("/")
                else {
                    throw reader.invalid(
                        "gateway.allowed_origins",
                        expected: "a comma-separated list of origins such as https://app.example.com (no path)",
                        got: text
                    )
                }
                origins.insert(origin)
            }
            allowedOrigins = origins
        }
        if auth == .singleUser, !Self.isLoopback(host) {
            throw reader.invalid(
                "gateway.host",
                expected: "a loopback address (127.0.0.1, ::1 or localhost) with gateway.auth = single_user",
                got: host
            )
        }
    }

    /// Whether `host` is a loopback address.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    private static func size(
        _ reader: ConfigurationReader,
        _ key: String,
        default value: Int
    ) throws(DeckhandError)
        -> Int
    {
        guard let text = reader.raw(key) else { return value }
        guard let bytes = DockerSettings.parseBytes(text), bytes > 0 else {
            throw reader.invalid(key, expected: "a size such as 512k, 1m or 64m", got: text)
        }
        return bytes
    }
}
