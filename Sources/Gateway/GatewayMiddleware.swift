import DeckhandCore
import HTTPTypes
import Hummingbird
import Logging

/// The middleware in front of every route: authenticates the request, then answers every error as JSON
/// (``APIError``), logging those that are the server's fault.
struct GatewayMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    let authentication: Authentication
    let retryAfter: Int
    let metrics: GatewayMetrics

    /// Routes anyone may call: liveness, health, metrics and the API description.
    static let openPaths: Set<String> = ["/alive", "/health", "/metrics", "/openapi.json"]

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var context = context
        let started = ContinuousClock.now
        let response = await answer(request, &context, next: next)
        metrics.request(
            route: context.endpointPath ?? "unmatched",
            method: request.method.rawValue,
            status: response.status.code,
            duration: ContinuousClock.now - started
        )
        return response
    }

    private func answer(
        _ request: Request,
        _ context: inout Context,
        next: (Request, Context) async throws -> Response
    ) async -> Response {
        do {
            let path = request.uri.path
            if !Self.openPaths.contains(path) {
                context.principal = try await authentication.principal(for: request, path: path)
            }
            return try await next(request, context)
        } catch {
            let answer = APIError(error, retryAfter: retryAfter)
            if answer.isServerFault {
                context.logger.error(
                    "request failed",
                    metadata: [LogKey.error.rawValue: "\(error)", "http.path": "\(request.uri.path)"]
                )
            } else if answer.status == .serviceUnavailable {
                context.logger.warning(
                    "request refused: a dependency is unavailable",
                    metadata: [LogKey.error.rawValue: "\(error)"]
                )
            }
            return answer.response
        }
    }
}

/// How the gateway decides who a request is (``GatewaySettings/AuthMode``).
enum Authentication: Sendable {
    case apiKeys(Authenticator)
    case singleUser(Principal)

    /// Whether `path` is a live stream, where browsers may pass the key as `api_key` in the query (they cannot
    /// set headers on a WebSocket or an EventSource).
    static func isStream(_ path: String) -> Bool {
        path.hasPrefix("/sockets/events/")
            || (path.hasPrefix("/api/conversations/") && path.hasSuffix("/events/stream"))
    }

    /// The request's principal; nil only for a WebSocket that sent no key (it may authenticate with its first
    /// frame). A missing or bad key elsewhere is a 401.
    func principal(for request: Request, path: String) async throws -> Principal? {
        switch self {
        case .singleUser(let principal):
            return principal
        case .apiKeys(let authenticator):
            var key = Self.bearer(request.headers[.authorization])
            if key == nil, Self.isStream(path) { key = request.uri.queryParameters.get("api_key") }
            guard let key else {
                if path.hasPrefix("/sockets/events/") { return nil }
                throw APIError.unauthorized
            }
            guard let principal = try await authenticator.principal(for: key) else { throw APIError.unauthorized }
            return principal
        }
    }

    /// The principal of a key sent some other way (a WebSocket's first frame); nil when it is not a live key.
    func principal(forKey key: String) async throws -> Principal? {
        switch self {
        case .singleUser(let principal): return principal
        case .apiKeys(let authenticator): return try await authenticator.principal(for: key)
        }
    }

    /// The key of an `Authorization: Bearer <key>` header.
    static func bearer(_ header: String?) -> String? {
        guard let header else { return nil }
        // Split by hand: Foundation's trimming goes through NSString and was 4 % of a request's CPU.
        let parts = header.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1])
    }
}
