import DeckhandCore
import HTTPClient

/// gRPC calls over the HTTP client (libcurl, HTTP/2): unary and server-streaming, protobuf bytes in and out.
///
/// An `https://` server is reached with TLS and ALPN `h2`, an `http://` one with h2c prior knowledge (the fakes
/// of tests). The status comes from the `grpc-status` trailer (or the headers of a trailers-only answer), never
/// from the transfer's own result; a response cut before its status is `UNAVAILABLE`. A deadline travels as
/// `grpc-timeout` and bounds the transfer; when it passes the call is `DEADLINE_EXCEEDED`. Nothing is retried
/// here: retrying (with the same idempotency key) is the caller's policy.
public struct GRPCClient: Sendable {
    /// `https://host[:port]` or `http://host:port`, without a trailing slash.
    public let server: String
    let http: HTTPClient

    public init(server: String, http: HTTPClient) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.http = http
    }

    /// A unary call's answer: the message and the trailing metadata.
    public struct Answer: Sendable {
        public var message: [UInt8]
        public var trailers: HTTPHeaders
    }

    /// Calls `method` (`/package.Service/Method`) with one message; throws ``GRPCStatus`` for any status but OK.
    public func unary(
        _ method: String,
        _ message: [UInt8],
        metadata: HTTPHeaders = [:],
        deadline: Duration? = nil
    ) async throws -> Answer {
        let response: HTTPResponse
        do {
            response = try await http.execute(request(method, message, metadata: metadata, deadline: deadline))
        } catch let error as DeckhandError {
            throw Self.status(of: error, calling: method, deadline: deadline)
        }
        let status = GRPCStatus(status: response.status, headers: response.headers, trailers: response.trailers)
        guard status.code == .ok else { throw status }
        var decoder = GRPCFrameDecoder()
        let messages = try decoder.feed(response.body)
        guard messages.count == 1, !decoder.isInsideMessage else {
            throw GRPCStatus(
                .internal,
                "a unary answer held \(messages.count) whole messages\(decoder.isInsideMessage ? " and a cut one" : "")",
                trailers: status.trailers
            )
        }
        return Answer(message: messages[0], trailers: status.trailers)
    }

    /// Calls a server-streaming `method`: its messages as they arrive; the stream ends with the call, throwing
    /// ``GRPCStatus`` for any status but OK (a stream cut in the middle of a message is `UNAVAILABLE`).
    /// `trailers` is called with the trailing metadata when the call ends well.
    public func serverStreaming(
        _ method: String,
        _ message: [UInt8],
        metadata: HTTPHeaders = [:],
        deadline: Duration? = nil,
        trailers: @escaping @Sendable (HTTPHeaders) -> Void = { _ in }
    ) -> AsyncThrowingStream<[UInt8], any Error> {
        let call = request(method, message, metadata: metadata, deadline: deadline)
        let http = self.http
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let response = try await http.stream(call)
                    var decoder = GRPCFrameDecoder()
                    if response.status == 200 {
                        for try await piece in response.body {
                            for message in try decoder.feed(piece) { continuation.yield(message) }
                        }
                    }
                    let status = GRPCStatus(
                        status: response.status,
                        headers: response.headers,
                        trailers: response.trailers
                    )
                    guard status.code == .ok else { throw status }
                    guard !decoder.isInsideMessage else {
                        throw GRPCStatus(.unavailable, "the stream ended inside a message", trailers: status.trailers)
                    }
                    trailers(status.trailers)
                    continuation.finish()
                } catch let error as DeckhandError {
                    continuation.finish(throwing: Self.status(of: error, calling: method, deadline: deadline))
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    func request(_ method: String, _ message: [UInt8], metadata: HTTPHeaders, deadline: Duration?) -> HTTPRequest {
        var request = HTTPRequest(method: .post, url: server + method, body: GRPCFrame.encode(message))
        request.httpVersion = server.hasPrefix("https://") ? .http2 : .http2PriorKnowledge
        request.timeout = deadline
        request.headers.add(name: "content-type", value: "application/grpc")
        request.headers.add(name: "te", value: "trailers")
        if let deadline {
            // grpc-timeout takes at most 8 digits: milliseconds cover 27 hours.
            let milliseconds = min(max(1, deadline.wholeMilliseconds), 99_999_999)
            request.headers.add(name: "grpc-timeout", value: "\(milliseconds)m")
        }
        for field in metadata { request.headers.add(name: field.name, value: field.value) }
        return request
    }

    /// A transfer that failed before a status: a deadline that passed, or a server that cannot be reached
    /// (or that cut the connection), which may answer if tried again.
    static func status(of error: DeckhandError, calling method: String, deadline: Duration?) -> GRPCStatus {
        switch error.code {
        case .httpTimeout:
            GRPCStatus(
                .deadlineExceeded,
                "\(method) did not finish within its deadline (\(deadline.map { "\($0)" } ?? "none"))"
            )
        case .httpInvalidRequest:
            GRPCStatus(.internal, "\(method) cannot be sent: \(error.message)")
        case .httpShutdown:
            GRPCStatus(.cancelled, error.message)
        default:
            GRPCStatus(.unavailable, error.message)
        }
    }
}
