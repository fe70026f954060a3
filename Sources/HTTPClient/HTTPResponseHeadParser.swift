/// Reads the header lines libcurl hands to its header callback and tells the head from the trailers.
///
/// A response starts with a status line (`HTTP/1.1 200 OK`, `HTTP/2 200`), header lines and an empty line.
/// Interim `1xx` blocks are skipped. Every header line after the final block's empty line is a trailer: with
/// libcurl 7.88, HTTP/2 trailers (such as `grpc-status`) and HTTP/1.1 chunked trailers arrive this way, after
/// the body. Pure value type, no I/O.
public struct HTTPResponseHeadParser: Sendable {
    /// What one line meant.
    public enum Event: Sendable, Equatable {
        /// Nothing complete yet.
        case none
        /// The final response head (status and headers) is complete.
        case headComplete
    }

    private enum Phase: Sendable {
        case awaitingStatus
        case inHeaders
        case headComplete
    }

    private var phase: Phase = .awaitingStatus
    /// The status of the latest status line, or `nil` before one arrived.
    public private(set) var status: Int?
    /// The header fields of the latest (and, once complete, final) header block.
    public private(set) var headers = HTTPHeaders()
    /// The trailer fields seen after the head.
    public private(set) var trailers = HTTPHeaders()

    /// Creates a parser waiting for a status line.
    public init() {}

    /// Whether the final response head is complete.
    public var isHeadComplete: Bool { phase == .headComplete }

    /// Consumes one header line (with or without its line ending).
    public mutating func consume(line: some Collection<UInt8>) -> Event {
        var bytes = Array(line)
        while let last = bytes.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") {
            bytes.removeLast()
        }
        if bytes.isEmpty {
            guard phase == .inHeaders else { return .none }
            if let status, (100..<200).contains(status), status != 101 {
                phase = .awaitingStatus
                return .none
            }
            phase = .headComplete
            return .headComplete
        }
        if phase != .headComplete, bytes.starts(with: Array("HTTP/".utf8)) {
            status = Self.parseStatus(bytes)
            headers = HTTPHeaders()
            phase = .inHeaders
            return .none
        }
        let first = bytes[0]
        if first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") {
            // An obsolete folded continuation of the previous value.
            appendContinuation(String(decoding: bytes, as: UTF8.self).trimmingWhitespace())
            return .none
        }
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return .none }
        let name = String(decoding: bytes[..<colon], as: UTF8.self).trimmingWhitespace()
        let value = String(decoding: bytes[(colon + 1)...], as: UTF8.self).trimmingWhitespace()
        switch phase {
        case .headComplete: trailers.add(name: name, value: value)
        case .inHeaders: headers.add(name: name, value: value)
        case .awaitingStatus: break
        }
        return .none
    }

    private mutating func appendContinuation(_ text: String) {
        if phase == .headComplete {
            trailers.appendToLastValue(text)
        } else if phase == .inHeaders {
            headers.appendToLastValue(text)
        }
    }

    static func parseStatus(_ line: [UInt8]) -> Int? {
        // "HTTP/1.1 200 OK" or "HTTP/2 200"
        let parts = line.split(separator: UInt8(ascii: " "), maxSplits: 2, omittingEmptySubsequences: true)
        guard parts.count >= 2 else { return nil }
        return Int(String(decoding: parts[1], as: UTF8.self))
    }
}

extension HTTPHeaders {
    fileprivate mutating func appendToLastValue(_ text: String) {
        guard let last = self.reversed().first else { return }
        var all = Array(self)
        all[all.count - 1] = Field(name: last.name, value: last.value + " " + text)
        self = HTTPHeaders(all.map { ($0.name, $0.value) })
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        return String(scalars)
    }
}
