import ArgumentParser
import DeckhandCore
import Logging

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
            logger: logger
        ) { resources in
            [try await resources.runtimeWorker(workerID: workerID, logger: logger)]
        }
    }
}
