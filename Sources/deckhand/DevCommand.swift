import ArgumentParser
import DeckhandCore
import DeckhandStore
import Foundation
import Gateway
import Logging
import RuntimeManager
import ServiceLifecycle

/// `deckhand dev`: the whole stack in one process against the local services (DESIGN §1).
struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Run a gateway, a conversation worker and a runtime worker in one process, for one machine.",
        discussion: """
            Uses the local RabbitMQ and PostgreSQL (deploy/local/services.sh start), Docker sandboxes when the \
            engine answers and has the sandbox image, process sandboxes otherwise. Creates the user --user if \
            needed and prints a new API key for it, and the API's URL. The model is llm.* \
            (DECKHAND_LLM_BASE_URL, DECKHAND_LLM_API_KEY, DECKHAND_LLM_MODEL); without one, conversations can \
            still replay a trajectory (replay_json). With --runtime-api, also serves OpenHands' Remote Runtime \
            API (runtime_api.port) and prints a key for it. SIGTERM or SIGINT stops everything gracefully.
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "Prefix of every exchange and queue name.")
    var namespace = ""

    @Option(help: "Override gateway.port (0: any free port).")
    var port: Int?

    @Option(help: "The user to create a key for.")
    var user = "local"

    @Flag(help: "Also serve OpenHands' Remote Runtime API (deckhand runtime-api) on runtime_api.port.")
    var runtimeAPI = false

    func run() async throws {
        var configuration = try options.loadConfiguration()
        if let port { configuration.gateway.port = port }
        // Each step in flight holds a connection; the gateway and the runtime worker need some more.
        configuration.postgres.poolSize = max(configuration.postgres.poolSize, configuration.amqp.prefetch + 12)
        let metrics = bootstrapMetrics()
        let logger = Logger(label: "deckhand.dev")
        let user = user
        let host = configuration.gateway.host

        try await runWorkerRole(
            name: "deckhand-dev",
            configuration: configuration,
            namespace: namespace,
            logger: logger
        ) { resources in
            let runtime = try await resources.runtimeWorker(logger: Logger(label: "deckhand.runtime"))
            let sandboxes = runtime.configuration.defaultBackend.rawValue
            let key = try await APIKeyStore(postgres: resources.postgres).create(user: user, name: "deckhand dev")
            let gateway = resources.gateway(metrics: metrics, logger: Logger(label: "deckhand.gateway")) { port in
                let url = "http://\(host):\(port)"
                let banner = """
                    Deckhand is running: \(url) (sandboxes: \(sandboxes))
                    API key of user \(user) (shown once): \(key.key)
                      export DECKHAND_URL=\(url) DECKHAND_KEY=\(key.key)
                      curl -H "Authorization: Bearer $DECKHAND_KEY" $DECKHAND_URL/api/conversations

                    """
                FileHandle.standardOutput.write(Data(banner.utf8))
            }
            // Shut down in reverse: the gateway stops taking requests first, the runtime worker goes last.
            var services: [any Service] = [
                runtime, resources.conversationWorker(logger: Logger(label: "deckhand.conversation")), gateway,
            ]
            if runtimeAPI {
                let apiHost = resources.configuration.runtimeAPI.host
                let providerKey = try await APIKeyStore(postgres: resources.postgres)
                    .create(user: user, name: "deckhand dev runtime-api", scope: .runtimeAPI)
                services.append(
                    resources.runtimeAPI(logger: Logger(label: "deckhand.runtime-api")) { port in
                        let banner = """
                            Runtime API: http://\(apiHost):\(port) (X-API-Key, shown once: \(providerKey.key))

                            """
                        FileHandle.standardOutput.write(Data(banner.utf8))
                    }
                )
            }
            return services
        }
    }
}
