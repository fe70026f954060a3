import ArgumentParser
import DeckhandCore
import Logging
import Messaging

/// `deckhand conversation-worker`: runs the agent, one step per message (DESIGN §1, §4).
struct ConversationWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conversation-worker",
        abstract: "Consume conversation.commands: run the agent loop one step per message.",
        discussion: """
            Applies the database migrations, declares the RabbitMQ topology, then consumes until SIGTERM or \
            SIGINT, after which it takes no new message, lets the steps in flight finish (up to \
            agent.shutdown_timeout) and exits 0. Steps in flight are bounded by amqp.prefetch; the PostgreSQL \
            pool grows to at least amqp.prefetch + 4 connections, because each step holds one.
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "Prefix of every exchange and queue name (and the deployment's name in lock keys).")
    var namespace = ""

    @Option(help: "This worker's name in logs (default: host-pid-random).")
    var workerID: String?

    @Option(help: "The sandbox backend to ask the runtime workers for: docker or process (default: theirs).")
    var sandboxBackend: RuntimeSettings.Backend?

    func run() async throws {
        var configuration = try options.loadConfiguration()
        let logger = Logger(label: "deckhand.conversation")
        // Each step in flight holds a connection (its lock); the other commands need a few more.
        configuration.postgres.poolSize = max(configuration.postgres.poolSize, configuration.amqp.prefetch + 4)

        try await runWorkerRole(
            name: "deckhand-conversation-worker",
            configuration: configuration,
            namespace: namespace,
            logger: logger,
            consumes: { [$0.conversationQueue, $0.deadQueue] },
            makeServices: { resources in
                [resources.conversationWorker(workerID: workerID, sandboxBackend: sandboxBackend, logger: logger)]
            }
        )
    }
}

extension RuntimeSettings.Backend: ExpressibleByArgument {}
