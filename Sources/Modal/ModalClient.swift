import DeckhandCore
import Foundation
import GRPC
import HTTPClient
import Logging

/// Modal's API (`modal.client.ModalClient`, gRPC) with what every call carries: the token, the client's
/// identity and an idempotency key.
///
/// A call that fails with `UNAVAILABLE`, `RESOURCE_EXHAUSTED` or `DEADLINE_EXCEEDED` (or is cut) is tried again
/// with back-off for `retryFor`, with the same `x-idempotency-key` and a rising `x-retry-attempt` (and
/// `x-retry-delay`, seconds since the first try), as Modal's own clients do; any other status is final.
/// `x-modal-warning` trailers are logged. The token is never logged nor put in an error.
public struct ModalClient: Sendable {
    /// What a client needs to reach Modal.
    public struct Credentials: Sendable {
        public var tokenID: String
        public var tokenSecret: String

        public init(tokenID: String, tokenSecret: String) {
            self.tokenID = tokenID
            self.tokenSecret = tokenSecret
        }
    }

    public static let service = "/modal.client.ModalClient/"
    /// `x-modal-client-type`: Modal has no value for other clients; its Go library's (9) behaves as this one
    /// does (no Python SDK features).
    public static let clientType = "9"

    let grpc: GRPCClient
    let credentials: Credentials
    let clientVersion: String
    let deadline: Duration
    let retryFor: Duration
    let logger: Logger

    /// - Parameters:
    ///   - server: `https://api.modal.com`, or an `http://` fake (h2c).
    ///   - clientVersion: `x-modal-client-version`, the Python SDK version this client behaves like.
    ///   - deadline: the longest one call may take (long polls ask for less).
    ///   - retryFor: how long a transient failure is tried again.
    public init(
        server: String,
        credentials: Credentials,
        clientVersion: String = "1.0.0",
        deadline: Duration = .seconds(90),
        retryFor: Duration = .seconds(30),
        http: HTTPClient,
        logger: Logger
    ) {
        self.grpc = GRPCClient(server: server, http: http)
        self.credentials = credentials
        self.clientVersion = clientVersion
        self.deadline = deadline
        self.retryFor = retryFor
        self.logger = logger
    }

    func metadata(idempotencyKey: String, attempt: Int, since start: ContinuousClock.Instant) -> HTTPHeaders {
        var fields: HTTPHeaders = [
            "x-modal-client-type": Self.clientType,
            "x-modal-client-version": clientVersion,
            "x-modal-libmodal-version": "deckhand/0.1.0",
            "x-modal-token-id": credentials.tokenID,
            "x-modal-token-secret": credentials.tokenSecret,
            "x-idempotency-key": idempotencyKey,
            "x-retry-attempt": String(attempt),
        ]
        if attempt > 0 {
            fields.add(name: "x-retry-delay", value: String(format: "%.3f", (ContinuousClock.now - start).seconds))
        }
        return fields
    }

    /// Calls `method` (`SandboxCreate`) with `request`; the answer read as `Response`. Throws ``GRPCStatus``.
    public func call<Response: ProtobufMessage>(
        _ method: String,
        _ request: some ProtobufMessage,
        as response: Response.Type = Response.self,
        deadline: Duration? = nil
    ) async throws -> Response {
        let path = Self.service + method
        let body = request.serialized()
        let key = UUID().uuidString.lowercased()
        let start = ContinuousClock.now
        var backoff = Backoff(minimum: .milliseconds(100), maximum: .seconds(2))
        var attempt = 0
        while true {
            do {
                let answer = try await grpc.unary(
                    path,
                    body,
                    metadata: metadata(idempotencyKey: key, attempt: attempt, since: start),
                    deadline: deadline ?? self.deadline
                )
                warn(answer.trailers, method)
                return try Response(serialized: answer.message)
            } catch let status as GRPCStatus where status.isTransient && ContinuousClock.now - start < retryFor {
                warn(status.trailers, method)
                attempt += 1
                logger.debug(
                    "a Modal call failed; trying it again",
                    metadata: ["modal.rpc": "\(method)", "modal.attempt": "\(attempt)", "grpc.status": "\(status)"]
                )
                try await Task.sleep(for: backoff.next())
            } catch let status as GRPCStatus {
                warn(status.trailers, method)
                throw status
            }
        }
    }

    /// Calls a server-streaming `method`; its messages read as `Response`. Not retried (a caller long-polling
    /// calls again from where it was).
    public func stream<Response: ProtobufMessage>(
        _ method: String,
        _ request: some ProtobufMessage,
        as response: Response.Type = Response.self,
        deadline: Duration? = nil
    ) -> AsyncThrowingMapSequence<AsyncThrowingStream<[UInt8], any Error>, Response> {
        let logger = self.logger
        let messages = grpc.serverStreaming(
            Self.service + method,
            request.serialized(),
            metadata: metadata(idempotencyKey: UUID().uuidString.lowercased(), attempt: 0, since: .now),
            deadline: deadline ?? self.deadline,
            trailers: { Self.warn($0, method, logger) }
        )
        return messages.map { try Response(serialized: $0) }
    }

    func warn(_ trailers: HTTPHeaders, _ method: String) {
        Self.warn(trailers, method, logger)
    }

    /// Modal's `x-modal-warning` trailers (percent-encoded text), logged.
    static func warn(_ trailers: HTTPHeaders, _ method: String, _ logger: Logger) {
        for warning in trailers.values(for: "x-modal-warning") {
            logger.warning(
                "Modal warns: \(warning.removingPercentEncoding ?? warning)",
                metadata: ["modal.rpc": "\(method)"]
            )
        }
    }
}
