import DeckhandCore

extension DeckhandError.Code {
    /// The connection was not established within the request's connect timeout.
    public static let httpConnectTimeout: Self = "HTTP$CONNECT_TIMEOUT"
    /// The transfer did not finish within the request's total timeout.
    public static let httpTimeout: Self = "HTTP$TIMEOUT"
    /// Nothing accepted the connection (refused, unreachable, or no such Unix socket).
    public static let httpConnectionFailed: Self = "HTTP$CONNECTION_FAILED"
    /// The host name could not be resolved.
    public static let httpDNS: Self = "HTTP$DNS"
    /// The TLS handshake or the certificate check failed.
    public static let httpTLS: Self = "HTTP$TLS"
    /// The request cannot be sent as given (bad URL, unsupported scheme or option).
    public static let httpInvalidRequest: Self = "HTTP$INVALID_REQUEST"
    /// The transfer failed after it started (connection reset, malformed response, …).
    public static let httpTransfer: Self = "HTTP$TRANSFER"
    /// The client was shut down before or while the request ran.
    public static let httpShutdown: Self = "HTTP$SHUTDOWN"
    /// The response status was not the one expected.
    public static let httpUnexpectedStatus: Self = "HTTP$UNEXPECTED_STATUS"
    /// The response body could not be decoded.
    public static let httpDecoding: Self = "HTTP$DECODING"
}
