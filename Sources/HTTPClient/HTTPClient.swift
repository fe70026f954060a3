import DeckhandCore
import Logging

/// An HTTP client over libcurl: one `curl_multi` thread carries every transfer of the client.
///
/// Requests are handed to the thread through a locked inbox; whole responses resume the awaiting task, and
/// streamed bodies arrive through an ``HTTPBodyStream`` that pauses the transfer when its reader is behind. No blocking call runs on Swift's cooperative
/// pool. Connections are kept alive and reused across requests to the same host. Cancelling the awaiting
/// task (or dropping a stream's body) aborts the transfer at once. Redirects are not followed.
///
/// ```swift
/// let client = try HTTPClient()
/// let ping = try await client.execute(
///     HTTPRequest(url: "http://localhost/v1.41/_ping", unixSocketPath: "/var/run/docker.sock")
/// )
/// await client.shutdown()
/// ```
public final class HTTPClient: Sendable {
    /// Connection-pool settings shared by all transfers of one client.
    public struct Configuration: Sendable {
        /// The most connections open to one host at a time; `nil` for no limit.
        public var maxConnectionsPerHost: Int?
        /// The most idle connections kept for reuse; `nil` for libcurl's default.
        public var maxIdleConnections: Int?

        /// Creates a configuration.
        public init(maxConnectionsPerHost: Int? = nil, maxIdleConnections: Int? = nil) {
            self.maxConnectionsPerHost = maxConnectionsPerHost
            self.maxIdleConnections = maxIdleConnections
        }
    }

    private let loop: CurlMultiLoop

    /// Creates a client and starts its curl thread.
    public init(configuration: Configuration = Configuration(), logger: Logger = Logger(label: "deckhand.http")) throws
    {
        self.loop = try CurlMultiLoop(configuration: configuration, logger: logger)
    }

    deinit {
        loop.requestShutdown()
    }

    /// Sends a request and returns the whole response.
    ///
    /// Any status is a response, not an error (see ``HTTPResponse/expectSuccess()``). Throws
    /// `CancellationError` when the task is cancelled (the transfer is aborted), and a `DeckhandError` with an
    /// `HTTP$…` code when the transfer fails: ``DeckhandCore/DeckhandError/Code/httpTimeout``,
    /// ``DeckhandCore/DeckhandError/Code/httpConnectTimeout``,
    /// ``DeckhandCore/DeckhandError/Code/httpConnectionFailed``, ``DeckhandCore/DeckhandError/Code/httpDNS``,
    /// ``DeckhandCore/DeckhandError/Code/httpTLS``, ``DeckhandCore/DeckhandError/Code/httpShutdown`` and others.
    public func execute(_ request: HTTPRequest) async throws -> HTTPResponse {
        let id = loop.makeTransferID()
        let loop = self.loop
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponse, any Error>) in
                switch loop.start(id, request, .whole(continuation)) {
                case .queued: break
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .shutDown: continuation.resume(throwing: Self.shutDownError())
                }
            }
        } onCancel: {
            loop.cancel(id)
        }
    }

    /// Sends a request and returns as soon as the response head has arrived; the body follows as a stream.
    ///
    /// Cancelling the task that awaits the head or iterates the body, or dropping the body before its end,
    /// aborts the transfer. Errors are those of ``execute(_:)``; after the head, they end the body stream.
    public func stream(_ request: HTTPRequest) async throws -> HTTPStreamingResponse {
        let id = loop.makeTransferID()
        let loop = self.loop
        let buffer = BodyBuffer(unpause: { loop.unpause(id) }, abort: { loop.cancel(id) })
        // The token keeps the client (and so its curl thread) alive until the body is read or dropped.
        let reader = BodyReaderToken { [self] in self.loop.cancel(id) }
        let trailers = TrailerStore()
        let head = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<StreamHead, any Error>) in
                let sink = StreamSink(head: continuation, body: buffer, trailers: trailers)
                switch loop.start(id, request, .stream(sink)) {
                case .queued: break
                case .cancelled: Transfer.failWithoutHandle(.stream(sink), CancellationError())
                case .shutDown: Transfer.failWithoutHandle(.stream(sink), Self.shutDownError())
                }
            }
        } onCancel: {
            loop.cancel(id)
        }
        return HTTPStreamingResponse(
            status: head.status,
            headers: head.headers,
            body: HTTPBodyStream(buffer: buffer, reader: reader),
            trailerStore: trailers
        )
    }

    /// Fails every transfer in flight with `HTTP$SHUTDOWN`, stops the curl thread and waits for it.
    ///
    /// Later requests fail with `HTTP$SHUTDOWN`. Calling it again does nothing.
    public func shutdown() async {
        await loop.shutdown()
    }

    private static func shutDownError() -> DeckhandError {
        DeckhandError(.httpShutdown, "the HTTP client was shut down")
    }
}
