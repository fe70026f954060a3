import ArgumentParser
import DeckhandCore
import Foundation
import Gateway
import Logging

/// `deckhand runtime-api`: OpenHands' Remote Runtime API over the runtime workers (DESIGN §1, §7).
struct RuntimeAPICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runtime-api",
        abstract: "Serve OpenHands' Remote Runtime API: sandboxes of the runtime workers for OpenHands or any client.",
        discussion: """
            Listens on runtime_api.host:runtime_api.port. Requests need X-API-Key with a key of scope \
            runtime_api (deckhand keys create --user NAME --scope runtime_api). Sends runtime commands over \
            RabbitMQ and answers from PostgreSQL, so runtime workers must run; applies the database migrations \
            and declares the RabbitMQ topology first. SIGTERM or SIGINT answers the requests in flight and exits \
            0. Run as many as the traffic needs, behind any load balancer.
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "Prefix of every exchange and queue name (as the workers were given).")
    var namespace = ""

    @Option(help: "Override runtime_api.port.")
    var port: Int?

    func run() async throws {
        var configuration = try options.loadConfiguration()
        if let port { configuration.runtimeAPI.port = port }
        let logger = Logger(label: "deckhand.runtime-api")
        try await runWorkerRole(
            name: "deckhand-runtime-api",
            configuration: configuration,
            namespace: namespace,
            logger: logger
        ) { resources in
            [resources.runtimeAPI(logger: logger)]
        }
    }
}
