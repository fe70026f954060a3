import AMQP
import DeckhandCore
import DeckhandStore
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import Messaging
import NIOCore
import Postgres
import ServiceLifecycle
import Synchronization

/// `deckhand gateway`: the OpenHands-compatible HTTP API over RabbitMQ and PostgreSQL (DESIGN §6).
///
/// Stateless apart from its live streams: any number run side by side, and a client may use any of them.
public struct Gateway: Service {
    public let settings: GatewaySettings
    /// What callers may choose and hold (the operator's limits).
    public let limits: UserLimits
    public let postgres: PostgresClient
    public let bus: CommandBus
    /// The deployment's name in advisory-lock keys (as the conversation workers have it).
    public let deployment: String
    /// This gateway's name in its queue (`gateway.<instance>`) and logs.
    public let instance: String
    public let metrics: GatewayMetrics
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    public init(
        settings: GatewaySettings,
        limits: UserLimits = UserLimits(),
        postgres: PostgresClient,
        bus: CommandBus,
        deployment: String = "default",
        instance: String = Gateway.defaultInstance(),
        metrics: GatewayMetrics = GatewayMetrics(),
        logger: Logger = Logger(label: "deckhand.gateway"),
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.settings = settings
        self.limits = limits
        self.postgres = postgres
        self.bus = bus
        self.deployment = deployment
        self.instance = instance
        self.metrics = metrics
        self.logger = logger
        self.onRunning = onRunning
    }

    /// Serves until the service group shuts down gracefully (requests in flight are answered first).
    public func run() async throws {
        let keys = APIKeyStore(postgres: postgres)
        if settings.auth == .singleUser {
            // Any page the user visits could reach a port on this machine: loopback only, and keys still.
            guard GatewaySettings.isLoopback(settings.host) else {
                throw DeckhandError(
                    .invalidConfiguration,
                    "gateway.auth = single_user serves loopback only, but gateway.host is \(settings.host)"
                )
            }
            _ = try await keys.ensureUser(named: settings.singleUser)
            logger.notice("single-user mode: loopback only; requests need the key of \(settings.singleUser)")
        }
        let authentication = Authentication.apiKeys(
            Authenticator(store: keys, ttl: settings.keyCacheTTL, failureLimit: settings.authFailureLimit)
        )
        let hub = EventHub(
            connection: bus.consuming,
            topology: bus.topology,
            instance: instance,
            bufferSize: settings.streamBuffer,
            logger: logger
        )
        try await hub.declare()
        let (router, webSockets) = makeRouters(authentication: authentication, hub: hub)
        let settings = settings
        let onRunning = onRunning
        let logger = logger
        let app = Application(
            router: router,
            server: .http1WebSocketUpgrade(webSocketRouter: webSockets),
            configuration: .init(
                address: .hostname(settings.host, port: settings.port),
                serverName: "deckhand-gateway"
            ),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? settings.port
                logger.info("gateway listening", metadata: [LogKey.httpAddress.rawValue: "\(settings.host):\(port)"])
                await onRunning(port)
            },
            logger: logger
        )
        // The live feed runs beside the server; on a graceful shutdown the streams end first, so that the
        // server's wait for its requests in flight is not a wait for clients that never leave.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await hub.run() }
            let census = StreamCensus(
                store: StreamCensusStore(postgres: postgres),
                gateway: instance,
                hub: hub,
                logger: logger
            )
            group.addTask { await census.run() }
            group.addTask {
                try await withGracefulShutdownHandler {
                    try await app.run()
                } onGracefulShutdown: {
                    hub.finishAll()
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// The HTTP router and the WebSocket router, both behind ``GatewayMiddleware``.
    func makeRouters(
        authentication: Authentication,
        hub: EventHub
    )
        -> (Router<GatewayRequestContext>, Router<GatewayRequestContext>)
    {
        let middleware = GatewayMiddleware(
            authentication: authentication,
            allowedOrigins: settings.allowedOrigins,
            retryAfter: settings.retryAfterSeconds,
            metrics: metrics
        )
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: middleware)
        let webSockets = Router(context: GatewayRequestContext.self)
        webSockets.add(middleware: middleware)
        router.get("alive") { _, _ in json(["status": "ok"]) }
        router.get("openapi.json") { _, _ in rawJSON(OpenAPIDocument.json) }
        let (metrics, bus) = (metrics, bus)
        router.addProbes(health: Health(postgres: postgres, amqp: bus.connection)) {
            await metrics.exposition(bus: bus)
        }
        let store = GatewayStore(
            records: PostgresConversationRecords(
                store: ConversationStore(postgres: postgres, deployment: deployment),
                gateway: instance
            )
        )
        let routes = ConversationRoutes(
            settings: settings,
            limits: limits,
            store: store,
            commands: bus,
            metrics: metrics,
            connections: { hub.subscribers(of: $0) }
        )
        routes.add(to: router)
        WorkspaceRoutes(settings: settings, store: store, bus: bus).add(to: router)
        EventStreams(
            hub: hub,
            store: store,
            authentication: authentication,
            routes: routes,
            metrics: metrics,
            logger: logger,
            open: OpenStreams(limit: settings.maxStreamsPerUser)
        )
        .add(to: router, webSockets: webSockets)
        return (router, webSockets)
    }

    /// `<host>-<pid>-<random>`: unique among the gateways sharing a broker.
    public static func defaultInstance() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "gateway"
        return "\(host)-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }
}

/// `GET /health`: whether RabbitMQ and PostgreSQL answer, each with its detail; 503 when one does not.
struct Health: Sendable {
    let postgres: PostgresClient
    let amqp: AMQPConnection

    func answer() async -> CachedAnswer.Answer {
        let broker = amqp.status
        var rabbit: [String: JSONValue] = ["status": broker.connected ? "ok" : "unavailable"]
        if let version = broker.serverVersion { rabbit["version"] = .string(version) }
        if !broker.connected, let error = broker.lastError { rabbit["error"] = .string(error) }
        let database: [String: JSONValue]
        let started = ContinuousClock.now
        do {
            let version = try await withDeadline(.seconds(2)) {
                try await postgres.query("SELECT current_setting('server_version') AS version").first?
                    .decode(String.self, "version")
            }
            database = [
                "status": "ok", "version": JSONValue(version),
                "latency_ms": .number(Double((ContinuousClock.now - started).wholeMilliseconds)),
            ]
        } catch {
            let reason = (error as? DeckhandError)?.message ?? "no answer within 2 s"
            database = ["status": "unavailable", "error": .string(reason)]
        }
        let healthy = broker.connected && database["status"] == "ok"
        let body: JSONValue = [
            "status": healthy ? "ok" : "unavailable",
            "dependencies": ["rabbitmq": .object(rabbit), "postgresql": .object(database)],
        ]
        return CachedAnswer.Answer(
            status: healthy ? .ok : .serviceUnavailable,
            contentType: "application/json",
            body: Array(body.serialized.utf8)
        )
    }
}

/// Runs `body`, failing with `SERVICE$TIMEOUT` if it has not finished after `limit`. Returns at the deadline
/// even when `body` cannot be interrupted (a blocking database call), which is left to finish on its own.
func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let once = Once()
    let claim: @Sendable () -> Bool = { once.claim() }
    return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let timer = Task {
            try await Task.sleep(for: limit)
            if claim() { continuation.resume(throwing: DeckhandError(.timeout, "no answer within \(limit)")) }
        }
        Task {
            let outcome: Result<T, any Error>
            do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
            timer.cancel()
            if claim() { continuation.resume(with: outcome) }
        }
    }
}

/// A flag that one caller can claim.
final class Once: Sendable {
    private let claimed = Mutex(false)

    /// True for the first caller only.
    func claim() -> Bool {
        claimed.withLock { claimed in
            defer { claimed = true }
            return !claimed
        }
    }
}
