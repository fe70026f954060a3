import ArgumentParser
import DeckhandCore
import Gateway
import Logging

/// `deckhand gateway`: the HTTP API (DESIGN §6).
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Serve the OpenHands-compatible HTTP API: commands to RabbitMQ, reads from PostgreSQL.",
        discussion: """
            Listens on gateway.host:gateway.port. Requests need Authorization: Bearer <key> (deckhand keys \
            create) unless gateway.auth = single_user. Applies the database migrations and declares the \
            RabbitMQ topology first; SIGTERM or SIGINT stops taking connections, answers the requests in \
            flight and exits 0. Run as many as the traffic needs, behind any load balancer.
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "Prefix of every exchange and queue name (as the workers were given).")
    var namespace = ""

    @Option(help: "Override gateway.port.")
    var port: Int?

    func run() async throws {
        var configuration = try options.loadConfiguration()
        if let port { configuration.gateway.port = port }
        let metrics = bootstrapMetrics()
        let logger = Logger(label: "deckhand.gateway")
        try await runWorkerRole(
            name: "deckhand-gateway",
            configuration: configuration,
            namespace: namespace,
            logger: logger
        ) { resources in
            [resources.gateway(metrics: metrics, logger: logger)]
        }
    }
}
