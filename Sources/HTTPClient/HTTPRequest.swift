import Foundation

/// An HTTP request for ``HTTPClient``: method, URL, headers, body and transport options.
public struct HTTPRequest: Sendable {
    /// An HTTP method such as `GET`; any token is allowed.
    public struct Method: Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
        /// The method token as sent on the wire.
        public let rawValue: String
        /// Creates a method from its token.
        public init(_ rawValue: String) { self.rawValue = rawValue }
        /// Creates a method from its token.
        public init(stringLiteral value: String) { self.rawValue = value }
        public var description: String { rawValue }

        public static let get: Self = "GET"
        public static let head: Self = "HEAD"
        public static let post: Self = "POST"
        public static let put: Self = "PUT"
        public static let patch: Self = "PATCH"
        public static let delete: Self = "DELETE"
        public static let options: Self = "OPTIONS"
    }

    /// The HTTP version to speak.
    public enum Version: Sendable, Hashable {
        /// HTTP/1.1 only.
        case http1_1
        /// HTTP/2 without negotiation (h2c "prior knowledge"): for `http://` servers known to speak HTTP/2.
        case http2PriorKnowledge
        /// HTTP/2 negotiated through TLS ALPN, falling back to HTTP/1.1 when the server does not offer it.
        case http2
    }

    /// Whether the server's TLS certificate and host name are checked.
    public enum TLSVerification: Sendable, Hashable {
        /// Verify the certificate chain and the host name (the default).
        case full
        /// Accept any certificate. Only for tests and trusted networks: it allows a man in the middle.
        case insecureNoVerification
    }

    /// The method.
    public var method: Method
    /// The absolute URL. For a Unix-socket target, the host is ignored (use `http://localhost/…`).
    public var url: String
    /// The header fields to send.
    public var headers: HTTPHeaders
    /// The body bytes, or `nil` for none.
    public var body: [UInt8]?
    /// The longest wait for the connection (TCP and TLS) to be established; `nil` means libcurl's default (300 s).
    public var connectTimeout: Duration?
    /// The longest time the whole transfer may take, body included; `nil` means no limit (for streams).
    public var timeout: Duration?
    /// A Unix-domain socket to connect to instead of the URL's host and port (the Docker Engine API).
    public var unixSocketPath: String?
    /// The HTTP version to speak.
    public var httpVersion: Version
    /// Whether the server's TLS certificate is checked; on by default.
    public var tlsVerification: TLSVerification

    /// Creates a request.
    public init(
        method: Method = .get,
        url: String,
        headers: HTTPHeaders = [:],
        body: [UInt8]? = nil,
        connectTimeout: Duration? = .seconds(10),
        timeout: Duration? = nil,
        unixSocketPath: String? = nil,
        httpVersion: Version = .http1_1,
        tlsVerification: TLSVerification = .full
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.unixSocketPath = unixSocketPath
        self.httpVersion = httpVersion
        self.tlsVerification = tlsVerification
    }

    /// The URL with any password replaced by `<redacted>`: safe for logs and error messages.
    public var redactedURL: String {
        Self.redact(url)
    }

    static func redact(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let authorityStart = schemeEnd.upperBound
        let authorityEnd = url[authorityStart...].firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? url.endIndex
        let authority = url[authorityStart..<authorityEnd]
        guard let at = authority.lastIndex(of: "@") else { return url }
        let userInfo = authority[..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return url }
        return String(url[..<url.index(after: colon)]) + "<redacted>" + String(url[at...])
    }
}

extension HTTPRequest {
    /// A request whose body is `value` encoded as JSON, with `Content-Type: application/json`.
    public static func json(
        _ method: Method = .post,
        url: String,
        body value: some Encodable,
        headers: HTTPHeaders = [:],
        encoder: JSONEncoder = JSONEncoder()
    ) throws -> HTTPRequest {
        var headers = headers
        headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        if !headers.contains(name: "Accept") {
            headers.add(name: "Accept", value: "application/json")
        }
        let data = try encoder.encode(value)
        return HTTPRequest(method: method, url: url, headers: headers, body: [UInt8](data))
    }

    /// A request whose body is UTF-8 text, with `Content-Type: text/plain; charset=utf-8` unless one is given.
    public static func text(
        _ method: Method = .post,
        url: String,
        body text: String,
        headers: HTTPHeaders = [:]
    ) -> HTTPRequest {
        var headers = headers
        if !headers.contains(name: "Content-Type") {
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        }
        return HTTPRequest(method: method, url: url, headers: headers, body: Array(text.utf8))
    }
}
