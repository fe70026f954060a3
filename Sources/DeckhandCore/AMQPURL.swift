/// The parts of an `amqp://user:password@host:port/vhost` URL, which may name several brokers of one cluster:
/// `amqp://user:password@a:5672,b:5672,c:5672/vhost` (same credentials and vhost on each).
///
/// The vhost is the percent-decoded path after the first `/`; an empty path means the default vhost `/`
/// (so `amqp://host/` and `amqp://host` both mean `/`, and `%2F` spells `/` explicitly).
public struct AMQPURL: Sendable, Equatable {
    /// One broker address.
    public struct Endpoint: Sendable, Equatable {
        public var host: String
        public var port: Int

        public init(host: String, port: Int = 5672) {
            self.host = host
            self.port = port
        }
    }

    /// The brokers, in the order they are tried (never empty).
    public var endpoints: [Endpoint]
    public var user: String
    public var password: String
    public var vhost: String

    /// The first broker's host.
    public var host: String {
        get { endpoints[0].host }
        set { endpoints[0].host = newValue }
    }
    /// The first broker's port.
    public var port: Int {
        get { endpoints[0].port }
        set { endpoints[0].port = newValue }
    }

    public init(
        host: String = "127.0.0.1",
        port: Int = 5672,
        user: String = "guest",
        password: String = "guest",
        vhost: String = "/"
    ) {
        self.init(endpoints: [Endpoint(host: host, port: port)], user: user, password: password, vhost: vhost)
    }

    /// A URL of several brokers; `endpoints` must not be empty.
    public init(endpoints: [Endpoint], user: String = "guest", password: String = "guest", vhost: String = "/") {
        precondition(!endpoints.isEmpty, "an AMQP URL names at least one broker")
        self.endpoints = endpoints
        self.user = user
        self.password = password
        self.vhost = vhost
    }

    /// Parses a URL; `nil` when it is not an `amqp://` URL with a valid port.
    public init?(_ text: String) {
        guard text.hasPrefix("amqp://") else { return nil }
        var rest = Substring(text.dropFirst("amqp://".count))
        var vhost = "/"
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let decoded = percentDecode(path) else { return nil }
                vhost = decoded
            }
            rest = rest[..<slash]
        }
        var user = "guest"
        var password = "guest"
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                guard let u = percentDecode(credentials[..<colon]),
                    let p = percentDecode(credentials[credentials.index(after: colon)...])
                else { return nil }
                user = u
                password = p
            } else {
                guard let u = percentDecode(credentials) else { return nil }
                user = u
            }
        }
        var endpoints: [Endpoint] = []
        for address in rest.split(separator: ",", omittingEmptySubsequences: false) {
            var port = 5672
            var host = address
            if let colon = address.lastIndex(of: ":") {
                guard let parsed = Int(address[address.index(after: colon)...]), (1...65535).contains(parsed) else {
                    return nil
                }
                port = parsed
                host = address[..<colon]
            }
            guard !host.isEmpty else { return nil }
            endpoints.append(Endpoint(host: String(host), port: port))
        }
        self.init(endpoints: endpoints, user: user, password: password, vhost: vhost)
    }

    /// The URL without its password, safe to log.
    public var redacted: String {
        let addresses = endpoints.map { "\($0.host):\($0.port)" }.joined(separator: ",")
        return "amqp://\(user):***@\(addresses)/\(vhost == "/" ? "" : vhost)"
    }
}

/// Decodes `%XX` escapes; `nil` when an escape is malformed or the bytes are not UTF-8.
func percentDecode<S: StringProtocol>(_ text: S) -> String? {
    var bytes: [UInt8] = []
    var iterator = text.utf8.makeIterator()
    while let byte = iterator.next() {
        if byte == UInt8(ascii: "%") {
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                return nil
            }
            bytes.append(high << 4 | low)
        } else {
            bytes.append(byte)
        }
    }
    return String(validating: bytes, as: UTF8.self)
}

private func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}
