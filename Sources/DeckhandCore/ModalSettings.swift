/// How runtime workers make `modal` sandboxes (`modal.*` keys): Modal's API over gRPC (../shared/MODAL.md).
///
/// The token may also come from Modal's own variables, `MODAL_TOKEN_ID` and `MODAL_TOKEN_SECRET` (and
/// `MODAL_ENVIRONMENT`, `MODAL_SERVER_URL`), below the configuration file and `DECKHAND_MODAL_*`.
public struct ModalSettings: Sendable {
    /// `modal.token_id` (`ak-…`); empty: no `modal` backend.
    public var tokenID: String = ""
    /// `modal.token_secret` (`as-…`). A secret: never logged.
    public var tokenSecret: String = ""
    /// `modal.environment`: Modal's environment; empty for the workspace's default.
    public var environment: String = ""
    /// `modal.app`: the app the sandboxes belong to (made when missing).
    public var app: String = "deckhand"
    /// `modal.server_url`: Modal's API (`https://` with TLS and ALPN h2; `http://` for a fake speaking h2c).
    public var serverURL: String = "https://api.modal.com"
    /// `modal.image`: the registry reference of Deckhand's sandbox image, pushed there by the operator (Modal
    /// pulls it; empty: `runtime.image`, which Modal can pull only if it is in a public registry).
    public var image: String?
    /// `modal.cpu`: cores per sandbox (a request; twice as many at most), times the sandbox's resource factor.
    public var cpu: Double = 1
    /// `modal.memory_mb`: MiB per sandbox (request and limit), times the sandbox's resource factor.
    public var memoryMB: Int = 2048
    /// `modal.timeout`: the longest a sandbox lives (Modal ends it then; idle rules usually end it first).
    public var timeout: Duration = .seconds(24 * 3600)
    /// `modal.request_timeout`: the deadline of one call to Modal's API (long polls ask for less).
    public var requestTimeout: Duration = .seconds(90)
    /// `modal.retry_for`: how long a call that fails as unavailable is tried again (same idempotency key).
    public var retryFor: Duration = .seconds(30)
    /// `modal.start_timeout`: how long a new sandbox may take to be scheduled and to open its tunnel.
    public var startTimeout: Duration = .seconds(300)
    /// `modal.client_version`: the `x-modal-client-version` sent (the Python SDK version Deckhand behaves like).
    public var clientVersion: String = "1.0.0"
    /// `modal.tunnel_tls`: whether tunnel URLs are `https://` (Modal's always are); `false` only for a fake
    /// Modal on loopback whose tunnels are plain HTTP.
    public var tunnelTLS: Bool = true

    public init() {}

    /// Whether a `modal` backend is configured.
    public var isConfigured: Bool { !tokenID.isEmpty }

    static let keys: Set<String> = [
        "modal.token_id", "modal.token_secret", "modal.environment", "modal.app", "modal.server_url", "modal.image",
        "modal.cpu", "modal.memory_mb", "modal.timeout", "modal.request_timeout", "modal.retry_for",
        "modal.start_timeout", "modal.client_version", "modal.tunnel_tls",
    ]

    /// Modal's own environment variables, read below the file and `DECKHAND_MODAL_*`.
    public static let modalVariables = [
        "MODAL_TOKEN_ID": "modal.token_id", "MODAL_TOKEN_SECRET": "modal.token_secret",
        "MODAL_ENVIRONMENT": "modal.environment", "MODAL_SERVER_URL": "modal.server_url",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        tokenID = reader.string("modal.token_id", default: tokenID)
        tokenSecret = reader.string("modal.token_secret", default: tokenSecret)
        if !tokenID.isEmpty, tokenSecret.isEmpty {
            throw reader.invalid(
                "modal.token_secret",
                expected: "the secret of modal.token_id (MODAL_TOKEN_SECRET)",
                got: ""
            )
        }
        environment = reader.string("modal.environment", default: environment)
        app = reader.string("modal.app", default: app)
        guard !app.isEmpty else { throw reader.invalid("modal.app", expected: "an app name", got: app) }
        serverURL = reader.string("modal.server_url", default: serverURL)
        guard serverURL.hasPrefix("https://") || serverURL.hasPrefix("http://") else {
            throw reader.invalid(
                "modal.server_url",
                expected: "an https:// (or, for a fake, http://) URL",
                got: serverURL
            )
        }
        if serverURL.hasSuffix("/") { serverURL.removeLast() }
        image = reader.optionalString("modal.image")
        if let text = reader.optionalString("modal.cpu") {
            guard let cores = Double(text), cores > 0, cores <= 64 else {
                throw reader.invalid("modal.cpu", expected: "a number of cores in (0, 64] such as 0.5 or 2", got: text)
            }
            cpu = cores
        }
        memoryMB = try reader.int("modal.memory_mb", default: memoryMB, range: 128...(256 << 10))
        timeout = try reader.duration("modal.timeout", default: timeout, minimum: .seconds(60))
        guard timeout <= .seconds(24 * 3600) else {
            throw reader.invalid("modal.timeout", expected: "at most 24h (Modal's longest sandbox)", got: "\(timeout)")
        }
        requestTimeout = try reader.duration("modal.request_timeout", default: requestTimeout, minimum: .seconds(1))
        retryFor = try reader.duration("modal.retry_for", default: retryFor)
        startTimeout = try reader.duration("modal.start_timeout", default: startTimeout, minimum: .seconds(1))
        clientVersion = reader.string("modal.client_version", default: clientVersion)
        tunnelTLS = try reader.bool("modal.tunnel_tls", default: tunnelTLS)
    }
}
