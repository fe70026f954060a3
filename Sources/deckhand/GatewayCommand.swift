import ArgumentParser
import DeckhandCore
import DeckhandStore
import Foundation
import Gateway
import Logging

/// `deckhand gateway`: the HTTP API (DESIGN §6).
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Serve the OpenHands-compatible HTTP API: commands to RabbitMQ, reads from PostgreSQL.",
        discussion: """
            Listens on gateway.host:gateway.port. Requests need Authorization: Bearer <key> (deckhand keys \
            create); with gateway.auth = single_user the gateway listens on loopback only and prints a new key \
            of gateway.single_user at start. Applies the database migrations and declares the \
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
            guard configuration.gateway.auth == .singleUser else {
                return [resources.gateway(metrics: metrics, logger: logger)]
            }
            let user = configuration.gateway.singleUser
            let host = configuration.gateway.host
            let key = try await APIKeyStore(postgres: resources.postgres).create(user: user, name: "deckhand gateway")
            return [
                resources.gateway(metrics: metrics, logger: logger) { port in
                    let banner = """
                        Deckhand gateway (single user): http://\(host):\(port)
                        API key of user \(user) (shown once): \(key.key)

                        """
                    FileHandle.standardOutput.write(Data(banner.utf8))
                }
            ]
        }
    }
}
