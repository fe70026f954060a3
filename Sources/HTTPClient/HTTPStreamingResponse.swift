import Synchronization

/// A response whose head has arrived and whose body is still streaming.
public struct HTTPStreamingResponse: Sendable {
    /// The status code.
    public let status: Int
    /// The header fields of the final response.
    public let headers: HTTPHeaders
    /// The body as chunks of bytes, in order, as they arrive. It ends with the response, or throws the
    /// transfer's error. Iterate it once; dropping it before its end aborts the transfer.
    public let body: HTTPBodyStream
    private let trailerStore: TrailerStore

    init(status: Int, headers: HTTPHeaders, body: HTTPBodyStream, trailerStore: TrailerStore) {
        self.status = status
        self.headers = headers
        self.body = body
        self.trailerStore = trailerStore
    }

    /// The trailer fields, filled in when the transfer ends: read them after ``body`` has ended.
    public var trailers: HTTPHeaders {
        trailerStore.fields.withLock { $0 }
    }

    /// Reads the rest of the body into one array.
    public func collectBody() async throws -> [UInt8] {
        var bytes: [UInt8] = []
        for try await chunk in body { bytes += chunk }
        return bytes
    }

    /// The body parsed as a `text/event-stream` of Server-Sent Events.
    public var sseEvents: ServerSentEventSequence {
        ServerSentEventSequence(body: body)
    }
}

/// The Server-Sent Events of a streaming response body, in order; ends with the body.
public struct ServerSentEventSequence: AsyncSequence, Sendable {
    public typealias Element = ServerSentEvent
    public typealias Failure = any Error

    let body: HTTPBodyStream

    /// Iterates the events.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(chunks: body.makeAsyncIterator())
    }

    /// Reads body chunks and parses them into events.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var chunks: HTTPBodyStream.AsyncIterator
        var parser = ServerSentEventParser()
        var pending: [ServerSentEvent] = []
        var index = 0

        /// The next event, or `nil` at the end of the body.
        public mutating func next() async throws -> ServerSentEvent? {
            while index == pending.count {
                guard let chunk = try await chunks.next() else { return nil }
                pending = parser.feed(chunk)
                index = 0
            }
            defer { index += 1 }
            return pending[index]
        }
    }
}
