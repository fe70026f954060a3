/// Where a worker role (`deckhand conversation-worker`, `runtime-worker`, `runtime-api`) serves `/alive`,
/// `/health` and `/metrics` (`metrics.*` keys). The gateway serves them on its own port.
public struct MetricsSettings: Sendable {
    /// `metrics.host`: the address to listen on (`0.0.0.0` where a scraper or a probe comes from elsewhere).
    public var host: String = "127.0.0.1"
    /// `metrics.port`: the port; empty: not served (0: any free port, logged).
    public var port: Int?

    public init() {}

    static let keys: Set<String> = ["metrics.host", "metrics.port"]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        host = reader.string("metrics.host", default: host)
        if reader.optionalString("metrics.port") != nil {
            port = try reader.int("metrics.port", default: 0, range: 0...65535)
        }
    }
}
