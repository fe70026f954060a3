import AMQP
import ArgumentParser
import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import Logging
import Messaging
import Postgres
import RuntimeManager
import ServiceLifecycle
import UnixSignals

/// `deckhand runtime-worker`: provisions and looks after sandboxes (DESIGN §1, §7).
struct RuntimeWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runtime-worker",
        abstract: "Consume runtime.commands: provision sandboxes, keep the warm pool, pause and stop idle sandboxes.",
        discussion: """
            Applies the database migrations, declares the RabbitMQ topology, reconciles the backends with the \
            database, then consumes until SIGTERM or SIGINT, after which it finishes the commands in flight \
            (up to runtime.shutdown_timeout) and exits 0.
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "Prefix of every exchange and queue name, and the deployment's label on its sandboxes.")
    var namespace = ""

    @Option(help: "This worker's name in leases and logs (default: host-pid-random).")
    var workerID: String?

    func run() async throws {
        let configuration = try options.loadConfiguration()
        let logger = Logger(label: "deckhand.runtime")
        let deployment = namespace.isEmpty ? "default" : namespace

        let postgres = PostgresClient(settings: configuration.postgres)
        let http = try HTTPClient()
        var connection: AMQPConnection?
        do {
            try await DeckhandSchema.migrate(postgres)
            let amqp = try await AMQPConnection.connect(
                configuration: .init(settings: configuration.amqp, name: "deckhand-runtime-worker")
            )
            connection = amqp
            let topology = Topology(namespace: namespace)
            try await topology.declare(on: amqp)
            let (backends, defaultBackend) = try await BackendSelection.make(
                configuration: configuration,
                deployment: deployment,
                http: http,
                logger: logger
            )
            var workerConfiguration = RuntimeWorker.Configuration(
                settings: configuration.runtime,
                defaultBackend: defaultBackend,
                prefetch: configuration.amqp.prefetch
            )
            if let workerID { workerConfiguration.workerID = workerID }
            let worker = RuntimeWorker(
                configuration: workerConfiguration,
                bus: CommandBus(connection: amqp, topology: topology),
                store: SandboxStore(postgres: postgres, deployment: deployment),
                backends: backends,
                http: http,
                logger: logger
            )
            let group = ServiceGroup(
                configuration: .init(
                    services: [worker],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger
                )
            )
            try await group.run()
        } catch {
            logger.critical("runtime worker failed", metadata: [LogKey.error.rawValue: "\(error)"])
            await connection?.close()
            await http.shutdown()
            await postgres.close()
            throw ExitCode(1)
        }
        await connection?.close()
        await http.shutdown()
        await postgres.close()
    }
}
