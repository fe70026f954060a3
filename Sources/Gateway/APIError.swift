import AMQP
import DeckhandCore
import DeckhandStore
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Postgres

/// An error answered to an API client: an HTTP status, a stable `code` and a human `message`, as the JSON
/// body `{"status":"error","code":…,"message":…}`. Every failure of a request ends as one of these
/// (``APIError/init(_:)`` maps the rest in one place); a message never carries a secret or an internal detail.
public struct APIError: Error, HTTPResponseError, Sendable, Equatable {
    public var status: HTTPResponse.Status
    public var code: DeckhandError.Code
    public var message: String
    /// Sent as `Retry-After` (seconds) on a 503.
    public var retryAfter: Int?
    /// Sent as `Allow` on a 405: the methods the route has.
    public var allow: [String] = []
    /// Sent as `Upgrade` on a 426: the protocol the route speaks.
    public var upgrade: String?

    public init(
        _ status: HTTPResponse.Status,
        _ code: DeckhandError.Code,
        _ message: String,
        retryAfter: Int? = nil
    ) {
        self.status = status
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        response
    }

    /// The JSON response of this error.
    public var response: Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        if !allow.isEmpty { headers[.allow] = allow.joined(separator: ", ") }
        if let upgrade {
            headers[.upgrade] = upgrade
            headers[.connection] = "Upgrade"
        }
        let body = JSONValue.apiError(code: code.rawValue, message: message)
        return Response(
            status: status,
            headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(string: body.serialized))
        )
    }
}

extension APIError {
    static func badRequest(_ message: String) -> APIError { APIError(.badRequest, .requestInvalid, message) }
    static func invalidField(_ message: String) -> APIError {
        APIError(.unprocessableContent, .requestInvalidField, message)
    }
    static let unauthorized = APIError(
        .unauthorized,
        .authUnauthorized,
        "missing or invalid API key: send Authorization: Bearer <key>"
    )
    static let conversationNotFound = APIError(.notFound, .conversationNotFound, "conversation not found")
    /// A `page_id` this API did not return (or one that no longer decodes): there is no such page.
    static let unknownPage = APIError(
        .notFound,
        .requestUnknownPage,
        "`page_id` is not a page this API returned: list again without it"
    )
    /// A plain request to a route that only upgrades to a WebSocket.
    static var upgradeRequired: APIError {
        var error = APIError(
            .upgradeRequired,
            .requestUpgradeRequired,
            "this route speaks WebSocket: send the request with Upgrade: websocket"
        )
        error.upgrade = "websocket"
        return error
    }

    /// A choice outside the operator's limits: a 403 with the limit's code (the value is well-formed, and
    /// another deployment would take it; this one does not allow it).
    static func refused(_ refusal: UserLimits.Refusal) -> APIError {
        APIError(.forbidden, refusal.code, refusal.message)
    }

    /// Maps any error thrown while answering a request to what the client sees. Errors that are not the
    /// client's to know about become a 500 that says nothing more (the caller logs them).
    init(_ error: any Error, retryAfter: Int) {
        switch error {
        case let error as APIError:
            self = error
        case let error as DeckhandError:
            switch error.code {
            case let code where Self.transient.contains(code):
                self = APIError(
                    .serviceUnavailable,
                    .unavailable,
                    "a service Deckhand depends on is unreachable; retry shortly",
                    retryAfter: retryAfter
                )
            case .timeout:
                self = APIError(.gatewayTimeout, .timeout, "the request did not finish in time")
            case .conversationNotFound:
                self = .conversationNotFound
            default:
                self = .serverFault
            }
        case is NIOTooManyBytesError:
            self = .tooLarge
        case let error as HTTPError:
            switch error.status {
            case .contentTooLarge:
                self = .tooLarge
            case .notFound:
                self = APIError(.notFound, .routeNotFound, "no such route")
            case .methodNotAllowed:
                self = APIError(.methodNotAllowed, .routeMethodNotAllowed, "method not allowed on this route")
            case let status where status.code < 500:
                self = APIError(status, .requestInvalid, error.body ?? status.reasonPhrase)
            default:
                self = .serverFault
            }
        default:
            self = .serverFault
        }
    }

    /// Failures of a dependency that pass by themselves: the client is told to retry (503 with
    /// `Retry-After`), not that the server is broken.
    static let transient: Set<DeckhandError.Code> = [
        .unavailable, .postgresPoolTimeout, .postgresStatementTimeout, .postgresClosed, .amqpRefused, .amqpNacked,
        .amqpUnroutable, .amqpClosed, .amqpBlocked,
    ]

    /// A 405 for a route that exists with other methods.
    static func methodNotAllowed(_ method: String, allow: [String]) -> APIError {
        var error = APIError(
            .methodNotAllowed,
            .routeMethodNotAllowed,
            "\(method) is not a method of this route (it has \(allow.joined(separator: ", ")))"
        )
        error.allow = allow
        return error
    }

    static let tooLarge = APIError(.contentTooLarge, .requestTooLarge, "the request body is too large")
    static let serverFault = APIError(.internalServerError, .internalError, "internal error")

    /// Logs what the server should know of this answer to `request`, which `error` caused: its own faults as
    /// errors, a dependency that is away as a warning; the client's mistakes not at all.
    func log(_ error: any Error, of request: Request, to logger: Logger) {
        if isServerFault {
            logger.error(
                "request failed",
                metadata: [
                    LogKey.error.rawValue: "\(error)", LogKey.httpMethod.rawValue: "\(request.method.rawValue)",
                    LogKey.httpPath.rawValue: "\(request.uri.path)",
                ]
            )
        } else if status == .serviceUnavailable {
            logger.warning(
                "request refused: a dependency is unavailable",
                metadata: [LogKey.error.rawValue: "\(error)"]
            )
        }
    }

    /// Whether the answer is a fault of this server to log: a 5xx other than the ones that say what is missing
    /// (a dependency: 503; a start that failed elsewhere: 502; a route not offered: 501).
    var isServerFault: Bool {
        status.code >= 500 && ![.serviceUnavailable, .badGateway, .notImplemented].contains(status)
    }
}

/// The codes of the gateway's own answers (the others are the modules' `DeckhandError` codes).
extension DeckhandError.Code {
    static let requestInvalid: Self = "REQUEST$INVALID"
    static let requestInvalidField: Self = "REQUEST$INVALID_FIELD"
    static let requestBodyRequired: Self = "REQUEST$BODY_REQUIRED"
    static let requestMalformedJSON: Self = "REQUEST$MALFORMED_JSON"
    static let requestNotJSON: Self = "REQUEST$NOT_JSON"
    static let requestNotMultipart: Self = "REQUEST$NOT_MULTIPART"
    static let requestTooLarge: Self = "REQUEST$TOO_LARGE"
    static let requestForbiddenOrigin: Self = "REQUEST$FORBIDDEN_ORIGIN"
    static let requestUnknownPage: Self = "REQUEST$UNKNOWN_PAGE"
    static let requestUpgradeRequired: Self = "REQUEST$UPGRADE_REQUIRED"
    static let routeNotFound: Self = "ROUTE$NOT_FOUND"
    static let routeMethodNotAllowed: Self = "ROUTE$METHOD_NOT_ALLOWED"
    static let authUnauthorized: Self = "AUTH$UNAUTHORIZED"
    static let authTooManyFailures: Self = "AUTH$TOO_MANY_FAILURES"
    static let streamTooSlow: Self = "STREAM$TOO_SLOW"
    static let streamTooMany: Self = "STREAM$TOO_MANY"
    static let workspaceTimeout: Self = "WORKSPACE$TIMEOUT"
    static let conversationExists: Self = "CONVERSATION$EXISTS"
    static let agentNoConfirmationPending: Self = "AGENT$NO_CONFIRMATION_PENDING"
}
