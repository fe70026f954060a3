import ArgumentParser

/// The `deckhand` command: one subcommand per role (DESIGN §1).
@main
struct Deckhand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deckhand",
        abstract: "Deckhand: an OpenHands-compatible agent platform around RabbitMQ and PostgreSQL.",
        subcommands: [
            Migrate.self, Check.self, GatewayCommand.self, RuntimeWorkerCommand.self, ConversationWorkerCommand.self,
            KeysCommand.self, DeadLettersCommand.self, DevCommand.self, RuntimeAPICommand.self,
        ]
    )
}
