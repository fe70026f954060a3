import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import HTTPTypes
import Hummingbird
import Logging
import Messaging
import NIOCore
import Postgres
import ServiceLifecycle

/// `deckhand runtime-api`: OpenHands' Remote Runtime API (PROTOCOL.md §D) over the runtime workers, so that
/// OpenHands, or any other client of that API, uses Deckhand's sandboxes, warm pool and backends.
///
/// Stateless: it sends runtime commands over AMQP and answers from PostgreSQL, so any number run side by side.
/// A session (the caller's `session_id`, per user) gets a runtime id of its own, which owns the session's sandbox
/// as a conversation id owns a conversation's: the runtime workers provision, wake, take over and reconcile it
/// the same way.
public struct RuntimeAPI: Service {
    public let settings: RuntimeAPISettings
    public let postgres: PostgresClient
    public let bus: CommandBus
    /// What asks a sandbox's `/alive` before `/start` answers with it.
    public let http: HTTPClient
    /// The `Retry-After` seconds of a 503.
    public let retryAfter: Int
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    public init(
        settings: RuntimeAPISettings,
        postgres: PostgresClient,
        bus: CommandBus,
        http: HTTPClient,
        retryAfter: Int = 2,
        logger: Logger = Logger(label: "deckhand.runtime-api"),
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.settings = settings
        self.postgres = postgres
        self.bus = bus
        self.http = http
        self.retryAfter = retryAfter
        self.logger = logger
        self.onRunning = onRunning
    }

    public func run() async throws {
        let authenticator = Authenticator(
            store: APIKeyStore(postgres: postgres),
            ttl: settings.keyCacheTTL,
            scope: .runtimeAPI
        )
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: RuntimeAPIMiddleware(authenticator: authenticator, retryAfter: retryAfter))
        RuntimeAPIRoutes(settings: settings, sessions: RuntimeSessionStore(postgres: postgres), bus: bus, http: http)
            .add(to: router)
        let settings = settings
        let logger = logger
        let onRunning = onRunning
        let app = Application(
            router: router,
            configuration: .init(
                address: .hostname(settings.host, port: settings.port),
                serverName: "deckhand-runtime-api"
            ),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? settings.port
                logger.info(
                    "runtime API listening",
                    metadata: [LogKey.httpAddress.rawValue: "\(settings.host):\(port)"]
                )
                await onRunning(port)
            },
            logger: logger
        )
        try await app.run()
    }
}

/// Authenticates every request but `/alive` by its `X-API-Key` (a key of scope `runtime_api`: 401 otherwise),
/// and answers every error as JSON (``APIError``), logging those that are the server's fault.
struct RuntimeAPIMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    let authenticator: Authenticator
    let retryAfter: Int

    static let keyField = HTTPField.Name("X-API-Key")!

    static let unauthorized = APIError(
        .unauthorized,
        .authUnauthorized,
        "missing or invalid API key: send X-API-Key with a key of scope runtime_api"
    )

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var context = context
        do {
            if request.uri.path != "/alive" {
                guard let key = request.headers[Self.keyField],
                    let principal = try await authenticator.principal(for: key, from: context.clientAddress)
                else { throw Self.unauthorized }
                context.principal = principal
            }
            return try await next(request, context)
        } catch {
            let answer = APIError(error, retryAfter: retryAfter)
            answer.log(error, of: request, to: context.logger)
            return answer.response
        }
    }
}

/// What OpenHands' Remote Runtime API says of a session's sandbox.
enum RuntimeAPIStatus {
    /// `status` of `/sessions/{id}` and `/list`: OpenHands' client attaches to `running`, resumes `paused` and
    /// starts again what is `stopped`. A sandbox on its way up is `running` (the client then waits for
    /// `pod_status: ready`); one that failed, was lost or never started is `stopped`.
    static func status(_ sandbox: SandboxRecord.Status?) -> String {
        switch sandbox {
        case .starting, .running, .warm: "running"
        case .paused: "paused"
        case .stopped, .error, .lost, nil: "stopped"
        }
    }

    /// `pod_status` of `/runtime/{id}`: `ready` once the sandbox answered `/alive` (the runtime workers record
    /// `running` only then), `pending` while it starts, `failed` when its start failed or it was lost. `paused`
    /// and `stopped` are Deckhand's own words (OpenHands' client waits on a status it does not know, which is
    /// right: the sandbox is not ready); `not found` before the session's first sandbox.
    static func podStatus(_ sandbox: SandboxRecord.Status?) -> String {
        switch sandbox {
        case .running, .warm: "ready"
        case .starting: "pending"
        case .paused: "paused"
        case .stopped: "stopped"
        case .error, .lost: "failed"
        case nil: "not found"
        }
    }
}

extension DeckhandError.Code {
    /// `deckhand runtime-api`: no runtime of that id (or session id) for this key's user.
    public static let runtimeNotFound: Self = "RUNTIME$NOT_FOUND"
    /// `deckhand runtime-api`: the user holds `runtime_api.max_live_runtimes` runtimes already.
    public static let runtimeTooMany: Self = "RUNTIME$TOO_MANY"
    /// `deckhand runtime-api`: image building (`/build`) is not offered.
    public static let runtimeBuildNotOffered: Self = "RUNTIME$BUILD_NOT_OFFERED"
}
