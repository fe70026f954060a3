/// One Server-Sent Event.
public struct ServerSentEvent: Sendable, Hashable {
    /// The last event ID seen on the stream (it carries over to later events until changed), or `nil`.
    public var id: String?
    /// The event type; `message` when the event named none.
    public var event: String
    /// The data lines of the event joined with `\n`.
    public var data: String
    /// The reconnection time in milliseconds, when this event's block set one.
    public var retry: Int?

    /// Creates an event.
    public init(id: String? = nil, event: String = "message", data: String, retry: Int? = nil) {
        self.id = id
        self.event = event
        self.data = data
        self.retry = retry
    }
}

/// An incremental `text/event-stream` parser following the WHATWG HTML rules.
///
/// Feed it bytes in chunks of any size; it returns the events that became complete. Lines end with CRLF, LF
/// or CR (a CRLF split across chunks counts once); a leading BOM is dropped; lines starting with `:` are
/// comments; a field without a colon has an empty value; one space after the colon is dropped; `data` lines
/// accumulate with `\n`; an `id` containing NUL is ignored; `retry` must be ASCII digits; an empty line
/// dispatches the event (none when no data was given); an unterminated last event is discarded at end of
/// stream. Pure value type, no I/O.
public struct ServerSentEventParser: Sendable {
    private var line: [UInt8] = []
    private var lastWasCR = false
    private var atStreamStart = true
    private var data = ""
    private var hasData = false
    private var eventType = ""
    private var retryInBlock: Int?
    /// The last event ID buffer, which persists across events.
    public private(set) var lastEventID: String?
    /// The latest valid `retry` value in milliseconds.
    public private(set) var reconnectionTime: Int?

    /// Creates a parser at the start of a stream.
    public init() {}

    /// Consumes bytes and returns the events they completed, in order.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        for byte in bytes {
            if atStreamStart {
                line.append(byte)
                if line.count < 3, Array(line) == Array([0xEF, 0xBB, 0xBF].prefix(line.count)) { continue }
                atStreamStart = false
                if line == [0xEF, 0xBB, 0xBF] {
                    line.removeAll()
                    continue
                }
                let pending = line
                line.removeAll()
                events += feed(pending)
                continue
            }
            switch byte {
            case UInt8(ascii: "\n"):
                if lastWasCR {
                    lastWasCR = false
                    continue
                }
                if let event = endLine() { events.append(event) }
            case UInt8(ascii: "\r"):
                lastWasCR = true
                if let event = endLine() { events.append(event) }
            default:
                lastWasCR = false
                line.append(byte)
            }
        }
        return events
    }

    /// Consumes one complete line (without its line ending) and returns the event it dispatched, if any.
    public mutating func feed(line text: String) -> ServerSentEvent? {
        atStreamStart = false
        line = Array(text.utf8)
        return endLine()
    }

    private mutating func endLine() -> ServerSentEvent? {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty { return dispatch() }
        if line[0] == UInt8(ascii: ":") { return nil }
        let field: String
        let value: Substring
        if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            field = String(decoding: line[..<colon], as: UTF8.self)
            var valueStart = colon + 1
            if valueStart < line.count, line[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
            value = Substring(String(decoding: line[valueStart...], as: UTF8.self))
        } else {
            field = String(decoding: line, as: UTF8.self)
            value = ""
        }
        switch field {
        case "event":
            eventType = String(value)
        case "data":
            if hasData { data += "\n" }
            data += value
            hasData = true
        case "id":
            if !value.contains("\0") { lastEventID = String(value) }
        case "retry":
            if !value.isEmpty, value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                let milliseconds = Int(value)
            {
                reconnectionTime = milliseconds
                retryInBlock = milliseconds
            }
        default:
            break
        }
        return nil
    }

    private mutating func dispatch() -> ServerSentEvent? {
        defer {
            data = ""
            hasData = false
            eventType = ""
            retryInBlock = nil
        }
        guard hasData else { return nil }
        return ServerSentEvent(
            id: lastEventID,
            event: eventType.isEmpty ? "message" : eventType,
            data: data,
            retry: retryInBlock
        )
    }
}
