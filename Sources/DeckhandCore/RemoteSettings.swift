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
    /// `remote.image`: the image `/start` asks for (empty: `runtime.image`), such as one of OpenHands' runtime
    /// images for a provider of OpenHands' API.
    public var image: String?
    /// `remote.command`: the `command` `/start` sends (a JSON array of strings, or words split on spaces; empty:
    /// none, for an API that serves the image with its own server, as Deckhand's does). OpenHands' runtime images
    /// want the start command of their action-execution server on port 60000.
    public var command: [String] = []
    /// `remote.working_dir`: the `working_dir` `/start` sends.
    public var workingDir: String = "/workspace"

    public init() {}

    static let keys: Set<String> = [
        "remote.url", "remote.api_key", "remote.timeout", "remote.start_timeout", "remote.retry_for",
        "remote.image", "remote.command", "remote.working_dir",
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
        image = reader.optionalString("remote.image")
        if let text = reader.optionalString("remote.command") {
            guard let words = Self.words(text) else {
                throw reader.invalid(
                    "remote.command",
                    expected: "a JSON array of strings, or words separated by spaces",
                    got: text
                )
            }
            command = words
        }
        workingDir = reader.string("remote.working_dir", default: workingDir)
    }

    /// The words of a command: a JSON array of strings, or the text split on white space.
    static func words(_ text: String) -> [String]? {
        guard text.hasPrefix("[") else { return text.split(whereSeparator: \.isWhitespace).map(String.init) }
        guard case .array(let items)? = try? JSONValue(parsing: Array(text.utf8)) else { return nil }
        let words = items.compactMap(\.stringValue)
        return words.count == items.count ? words : nil
    }
}
