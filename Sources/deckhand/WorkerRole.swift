import AMQP
import ArgumentParser
import ConversationWorker
import DeckhandCore
import DeckhandStore
import Gateway
import HTTPClient
import Logging
import Messaging
import Postgres
import RuntimeManager
import ServiceLifecycle
import UnixSignals

/// What a worker role needs: PostgreSQL (migrated), an HTTP client, RabbitMQ with the topology declared
/// (two connections: one publishes, one consumes — a resource alarm blocks only the first), and the
/// configuration and deployment name they were opened with.
struct WorkerResources: Sendable {
    let configuration: DeckhandConfiguration
    /// The deployment's name in lock keys and sandbox labels: the namespace, or `default`.
    let deployment: String
    let postgres: PostgresClient
    let http: HTTPClient
    let amqp: AMQPConnection
    /// The connection consumers use; it never publishes.
    let consuming: AMQPConnection
    let topology: Topology

    var bus: CommandBus { CommandBus(connection: amqp, consuming: consuming, topology: topology) }

    /// A runtime worker on the backends the configuration selects (`deckhand runtime-worker`, `deckhand dev`).
    func runtimeWorker(workerID: String? = nil, logger: Logger) async throws -> RuntimeWorker {
        let (backends, defaultBackend) = try await BackendSelection.make(
            configuration: configuration,
            deployment: deployment,
            http: http,
            logger: logger
        )
        var settings = RuntimeWorker.Configuration(
            settings: configuration.runtime,
            defaultBackend: defaultBackend,
            prefetch: configuration.amqp.prefetch
        )
        if let workerID { settings.workerID = workerID }
        settings.advertiseHost = configuration.node.advertiseHost
        return RuntimeWorker(
            configuration: settings,
            bus: bus,
            store: SandboxStore(postgres: postgres, deployment: deployment, node: configuration.node.id),
            backends: backends,
            http: http,
            logger: logger
        )
    }

    /// A conversation worker on the configuration's model and agent settings.
    func conversationWorker(
        workerID: String? = nil,
        sandboxBackend: RuntimeSettings.Backend? = nil,
        logger: Logger
    ) -> ConversationWorker {
        var settings = ConversationWorker.Configuration(
            agent: configuration.agent,
            llm: configuration.llm,
            prefetch: configuration.amqp.prefetch,
            sandboxBackend: sandboxBackend
        )
        settings.sandboxSecrets = Array(configuration.runtime.environment.values)
        if let workerID { settings.workerID = workerID }
        return ConversationWorker(
            configuration: settings,
            bus: bus,
            store: ConversationStore(
                postgres: postgres,
                deployment: deployment,
                sealer: configuration.llm.keySecret.flatMap { try? StoredKeySealer(secret: $0) }
            ),
            http: http,
            logger: logger
        )
    }

    /// A gateway on the configuration's `gateway.*` settings.
    func gateway(
        metrics: GatewayMetrics,
        logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> Gateway {
        Gateway(
            settings: configuration.gateway,
            limits: UserLimits(configuration: configuration),
            postgres: postgres,
            bus: bus,
            deployment: deployment,
            metrics: metrics,
            logger: logger,
            onRunning: onRunning
        )
    }

    /// `deckhand runtime-api` on the configuration's `runtime_api.*` settings.
    func runtimeAPI(logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> RuntimeAPI {
        RuntimeAPI(
            settings: configuration.runtimeAPI,
            postgres: postgres,
            bus: bus,
            http: http,
            retryAfter: configuration.gateway.retryAfterSeconds,
            logger: logger,
            onRunning: onRunning
        )
    }
}

/// Runs a worker role: opens its resources, runs the services `makeServices` builds until SIGTERM or SIGINT
/// (their graceful shutdown, in reverse order), and closes everything. A failure is logged and ends the program with exit 1.
func runWorkerRole(
    name: String,
    configuration: DeckhandConfiguration,
    namespace: String,
    logger: Logger,
    consumes: (Topology) -> [String] = { _ in [] },
    gauges: (WorkerResources) -> @Sendable () async -> [RoleEndpoint.Reading] = { _ in { [] } },
    makeServices: (WorkerResources) async throws -> [any Service]
) async throws {
    // With metrics.port set, the role's swift-metrics go to the registry its /metrics exports (before any
    // metric is made).
    let registry = configuration.metrics.port != nil ? bootstrapMetrics().registry : nil
    let postgres = PostgresClient(settings: configuration.postgres)
    let http = try HTTPClient()
    var connections: [AMQPConnection] = []
    func close() async {
        for connection in connections { await connection.close() }
        await http.shutdown()
        await postgres.close()
    }
    do {
        // Each wait of the start-up says what it waits for: a role that is slow to start shows where.
        logger.info("\(name) starting: migrating PostgreSQL")
        try await DeckhandSchema.migrate(postgres)
        logger.info("\(name) starting: connecting to RabbitMQ")
        let amqp = try await AMQPConnection.connect(configuration: .init(settings: configuration.amqp, name: name))
        connections.append(amqp)
        let consuming = try await AMQPConnection.connect(
            configuration: .init(settings: configuration.amqp, name: name + "-consume")
        )
        connections.append(consuming)
        let topology = Topology(namespace: namespace)
        try await topology.declare(on: amqp)
        let resources = WorkerResources(
            configuration: configuration,
            deployment: namespace.isEmpty ? "default" : namespace,
            postgres: postgres,
            http: http,
            amqp: amqp,
            consuming: consuming,
            topology: topology
        )
        logger.info("\(name) starting: its services")
        var services = try await makeServices(resources)
        if let registry {
            services.append(
                RoleEndpoint(
                    settings: configuration.metrics,
                    role: String(name.dropFirst("deckhand-".count)),
                    postgres: postgres,
                    bus: resources.bus,
                    queues: consumes(topology),
                    registry: registry,
                    gauges: gauges(resources),
                    logger: logger
                )
            )
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
    } catch {
        logger.critical("\(name) failed", metadata: [LogKey.error.rawValue: "\(error)"])
        await close()
        throw ExitCode(1)
    }
    await close()
}
