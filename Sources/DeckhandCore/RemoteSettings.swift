/// How runtime workers reach a Runtime API for `remote` sandboxes (`remote.*` keys): OpenHands' Remote Runtime
/// API (PROTOCOL.md §D), served by another Deckhand's `deckhand runtime-api` or by any provider of it.
public struct RemoteSettings: Sendable {
    /// `remote.url`: the API's base URL (`https://runtime.example.com`); empty: no `remote` backend.
    public var url: String?
    /// `remote.api_key`: its `X-API-Key`. A secret: never logged.
    public var apiKey: String = ""
    /// `remote.timeout`: how long one request to it may take.
    public var timeout: Duration = .seconds(30)
    /// `remote.start_timeout`: how long a runtime may take to reach `pod_status: ready` after `/start` or
    /// `/resume`.
    public var startTimeout: Duration = .seconds(300)
    /// `remote.retry_for`: how long a request that fails on the network or with a 5xx is tried again (with
    /// back-off) before the operation is given up as an outage (and the runtime command retried later).
    public var retryFor: Duration = .seconds(30)

    public init() {}

    static let keys: Set<String> = [
        "remote.url", "remote.api_key", "remote.timeout", "remote.start_timeout", "remote.retry_for",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        if let url = reader.optionalString("remote.url") {
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                throw reader.invalid("remote.url", expected: "an http:// or https:// URL", got: url)
            }
            self.url = url.hasSuffix("/") ? String(url.dropLast()) : url
        }
        apiKey = reader.string("remote.api_key", default: apiKey)
        if url != nil, apiKey.isEmpty {
            throw reader.invalid(
                "remote.api_key",
                expected: "the Runtime API's key (X-API-Key) with remote.url set",
                got: ""
            )
        }
        timeout = try reader.duration("remote.timeout", default: timeout, minimum: .milliseconds(100))
        startTimeout = try reader.duration("remote.start_timeout", default: startTimeout, minimum: .seconds(1))
        retryFor = try reader.duration("remote.retry_for", default: retryFor)
    }
}
