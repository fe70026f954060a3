import DeckhandCore
import DeckhandStore
import HTTPTypes
import Hummingbird
import Logging
import Messaging

/// The middleware in front of every route: authenticates the request, then answers every error as JSON
/// (``APIError``), logging those that are the server's fault.
struct GatewayMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    let authentication: Authentication
    /// `gateway.allowed_origins`: the only web origins whose pages may call (CORS is answered for them).
    let allowedOrigins: Set<String>
    let retryAfter: Int
    let metrics: GatewayMetrics

    static let traceparentField = HTTPField.Name("traceparent")!

    /// Routes anyone may call: liveness, health, metrics and the API description.
    static let openPaths: Set<String> = ["/alive", "/health", "/metrics", "/openapi.json"]

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var context = context
        let started = ContinuousClock.now
        var response = await answer(request, &context, next: next)
        if let origin = request.headers[.origin], allowedOrigins.contains(origin) {
            response.headers[.accessControlAllowOrigin] = origin
            response.headers[.vary] = "Origin"
        }
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
            if let origin = request.headers[.origin] {
                // A browser says which page sent the request (HTTP and WebSocket upgrades alike): a page of any
                // other site must not drive the API, whatever it holds.
                guard !Self.isForeignPage(origin, allowed: allowedOrigins) else {
                    throw APIError(
                        .forbidden,
                        .requestForbiddenOrigin,
                        "requests from web pages of \(origin) are not allowed (gateway.allowed_origins)"
                    )
                }
                if request.method == .options { return Self.preflight }
            }
            if !Self.openPaths.contains(path) {
                context.principal = try await authentication.principal(
                    for: request,
                    path: path,
                    from: context.clientAddress
                )
            }
            // The request's trace: the caller's continued with a span of ours (a malformed one is a new trace),
            // or a new one. The commands it sends carry it on to the workers.
            let trace = request.headers[Self.traceparentField].map(Traceparent.child(of:)) ?? Traceparent.make()
            context.logger[metadataKey: LogKey.traceID.rawValue] = "\(Traceparent.traceID(of: trace) ?? "-")"
            let traced = context
            return try await Traceparent.$current.withValue(trace) { try await next(request, traced) }
        } catch {
            var answer = APIError(error, retryAfter: retryAfter)
            if answer.code == .routeNotFound {
                // A route that exists with other methods: 405 and the methods it has.
                let allow = OpenAPIDocument.methods(of: request.uri.path)
                if !allow.isEmpty { answer = .methodNotAllowed(request.method.rawValue, allow: allow) }
            }
            answer.log(error, of: request, to: context.logger)
            return answer.response
        }
    }
}

extension GatewayMiddleware {
    /// Whether `origin` is a web page the operator did not allow. Browsers send the page's `http(s)://` origin
    /// (or `null` for sandboxed frames and files); other clients that send one use other schemes (a WebSocket
    /// client's `ws://host`) and are not pages. The gateway serves no pages, so no origin is its own.
    static func isForeignPage(_ origin: String, allowed: Set<String>) -> Bool {
        if allowed.contains(origin) { return false }
        let lowered = origin.lowercased()
        return lowered == "null" || lowered.hasPrefix("http://") || lowered.hasPrefix("https://")
    }

    /// The answer to a CORS preflight from an allowed origin.
    static let preflight = Response(
        status: .noContent,
        headers: [
            .accessControlAllowMethods: "GET, POST, PATCH, DELETE, OPTIONS",
            .accessControlAllowHeaders: "Authorization, Content-Type, Last-Event-ID, X-Session-API-Key",
            .accessControlMaxAge: "600",
        ]
    )
}

/// How the gateway decides who a request is: an API key, in both ``GatewaySettings/AuthMode``s.
enum Authentication: Sendable {
    case apiKeys(Authenticator)

    /// Whether `path` is a live stream, where browsers may pass the key as `api_key` in the query (they cannot
    /// set headers on a WebSocket or an EventSource).
    static func isStream(_ path: String) -> Bool {
        path.hasPrefix("/sockets/events/")
            || (path.hasPrefix("/api/conversations/") && path.hasSuffix("/events/stream"))
    }

    /// The request's principal; nil only for a WebSocket that sent no key (it may authenticate with its first
    /// frame). A missing or bad key elsewhere is a 401.
    func principal(for request: Request, path: String, from address: String?) async throws -> Principal? {
        switch self {
        case .apiKeys(let authenticator):
            var key = Self.bearer(request.headers[.authorization])
            if key == nil, Self.isStream(path) { key = request.uri.queryParameters.get("api_key") }
            guard let key else {
                if path.hasPrefix("/sockets/events/") { return nil }
                throw APIError.unauthorized
            }
            guard let principal = try await authenticator.principal(for: key, from: address) else {
                throw APIError.unauthorized
            }
            return principal
        }
    }

    /// The principal of a key sent some other way (a WebSocket's first frame); nil when it is not a live key.
    func principal(forKey key: String, from address: String? = nil) async throws -> Principal? {
        switch self {
        case .apiKeys(let authenticator): return try await authenticator.principal(for: key, from: address)
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
