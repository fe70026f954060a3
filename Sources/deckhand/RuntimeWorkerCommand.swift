import ArgumentParser
import DeckhandCore
import DeckhandStore
import Gateway
import Logging
import Messaging

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
        try await runWorkerRole(
            name: "deckhand-runtime-worker",
            configuration: configuration,
            namespace: namespace,
            logger: logger,
            consumes: { [$0.runtimeQueue, $0.runtimeNodeQueue(configuration.node.id), $0.deadQueue] },
            gauges: { resources in
                let store = SandboxStore(
                    postgres: resources.postgres,
                    deployment: resources.deployment,
                    node: configuration.node.id
                )
                return {
                    let counts = (try? await store.warmCounts()) ?? [:]
                    return RuntimeSettings.Backend.allCases.map { backend in
                        RoleEndpoint.Reading(
                            name: "deckhand_warm_pool_sandboxes",
                            help: "Warm sandboxes ready to be handed out, by backend, when /metrics was read.",
                            labels: [("backend", backend.rawValue)],
                            value: Double(counts[backend.rawValue] ?? 0)
                        )
                    }
                }
            },
            makeServices: { resources in
                [try await resources.runtimeWorker(workerID: workerID, logger: logger)]
            }
        )
    }
}
