import AMQP
import ArgumentParser
import DeckhandCore
import DeckhandStore
import HTTPClient
import Logging
import Messaging
import Postgres
import ServiceLifecycle
import UnixSignals

/// What a worker role needs: PostgreSQL (migrated), an HTTP client, RabbitMQ with the topology declared.
struct WorkerResources: Sendable {
    let postgres: PostgresClient
    let http: HTTPClient
    let amqp: AMQPConnection
    let topology: Topology
}

/// Runs a worker role: opens its resources, runs the services `makeServices` builds until SIGTERM or SIGINT
/// (their graceful shutdown, in reverse order), and closes everything. A failure is logged and ends the program with exit 1.
func runWorkerRole(
    name: String,
    configuration: DeckhandConfiguration,
    namespace: String,
    logger: Logger,
    makeServices: (WorkerResources) async throws -> [any Service]
) async throws {
    let postgres = PostgresClient(settings: configuration.postgres)
    let http = try HTTPClient()
    var connection: AMQPConnection?
    func close() async {
        await connection?.close()
        await http.shutdown()
        await postgres.close()
    }
    do {
        try await DeckhandSchema.migrate(postgres)
        let amqp = try await AMQPConnection.connect(configuration: .init(settings: configuration.amqp, name: name))
        connection = amqp
        let topology = Topology(namespace: namespace)
        try await topology.declare(on: amqp)
        let services = try await makeServices(
            WorkerResources(postgres: postgres, http: http, amqp: amqp, topology: topology)
        )
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
