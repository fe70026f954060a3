import AMQP
import Agent
import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import LLM
import Logging
import Messaging
import Postgres
import ServiceLifecycle

/// A conversation worker (`deckhand conversation-worker`): consumes `conversation.commands` and runs the
/// agent one step per message (DESIGN §4). It keeps nothing between messages: any worker can take any
/// conversation's next step, and a worker that dies mid-step loses nothing.
public final class ConversationWorker: Service, Sendable {
    public struct Configuration: Sendable {
        public var agent: AgentSettings
        public var llm: LLMSettings
        /// Commands and steps handled at once (the consumer's prefetch).
        public var prefetch: Int
        /// This worker's name in logs.
        public var workerID: String
        /// Attempts through the retry queues before a failing step is dead-lettered (the chain watchdog
        /// restarts it later). Other commands get as many as span `agent.command_retry_for`.
        public var maxAttempts: Int
        /// The sandbox backend asked of the runtime workers (nil: their default).
        public var sandboxBackend: RuntimeSettings.Backend?
        /// Values every sandbox has in its environment (`runtime.environment`): masked in every event.
        public var sandboxSecrets: [String] = []

        public init(
            agent: AgentSettings = AgentSettings(),
            llm: LLMSettings = LLMSettings(),
            prefetch: Int = 32,
            workerID: String = makeWorkerID(),
            maxAttempts: Int = 5,
            sandboxBackend: RuntimeSettings.Backend? = nil
        ) {
            self.agent = agent
            self.llm = llm
            self.prefetch = prefetch
            self.workerID = workerID
            self.maxAttempts = maxAttempts
            self.sandboxBackend = sandboxBackend
        }
    }

    public let configuration: Configuration
    let bus: CommandBus
    let store: ConversationStore
    let llm: LLMClient
    let sandboxes: SandboxClient
    let sealer: StoredKeySealer?
    let logger: Logger
    /// The events of the conversations this worker stepped lately (a step reads only what is newer).
    let eventCache = EventCache()

    static let consumerName = "conversation-worker"

    public init(
        configuration: Configuration,
        bus: CommandBus,
        store: ConversationStore,
        http: HTTPClient,
        logger: Logger = Logger(label: "deckhand.conversation")
    ) {
        self.configuration = configuration
        self.bus = bus
        self.store = store
        var logger = logger
        logger[metadataKey: LogKey.worker.rawValue] = "\(configuration.workerID)"
        self.logger = logger
        self.llm = LLMClient(http: http, settings: configuration.llm, logger: logger)
        self.sandboxes = SandboxClient(http: http)
        self.sealer = configuration.llm.keySecret.flatMap { try? StoredKeySealer(secret: $0) }
    }

    /// The conversation's own model key, opened from its sealed form; nil when it has none (`llm.api_key`
    /// applies). Fails when it has one this worker cannot open: never the operator's key in its place.
    func modelKey(of record: ConversationRecord) throws -> String? {
        guard let stored = record.llmAPIKey else { return nil }
        guard let sealer else {
            throw DeckhandError(
                .invalidConfiguration,
                "the conversation has its own model key, which this worker cannot open without llm.key_secret"
            )
        }
        return try sealer.open(stored)
    }

    var topology: Topology { bus.topology }
    var agent: AgentSettings { configuration.agent }

    /// Consumes until a graceful shutdown (or cancellation): then takes no new message, lets the steps in
    /// flight finish within `agent.shutdown_timeout` (cancelling, and so requeueing, what is left), and returns.
    /// Meanwhile its ``ChainWatchdog`` restarts chains that lost their step.
    public func run() async throws {
        logger.info(
            "conversation worker consuming",
            metadata: [LogKey.amqpQueue.rawValue: "\(topology.conversationQueue)"]
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await ChainWatchdog(worker: self).run() }
            defer { group.cancelAll() }
            try await DrainingConsumer(
                connection: bus.consuming,
                queue: topology.conversationQueue,
                prefetch: configuration.prefetch,
                shutdownTimeout: agent.shutdownTimeout,
                logger: logger
            ).run { await self.handle($0) }
        }
        logger.info("conversation worker stopped")
    }

    // MARK: Messages

    func handle(_ delivery: AMQPDelivery) async {
        let logger = self.logger.forDelivery(delivery)
        guard let command = delivery.properties.type.flatMap(ConversationCommand.init(rawValue:)) else {
            logger.error("unknown conversation command: dead-lettered")
            delivery.reject()
            return
        }
        let messageID = delivery.properties.messageID ?? UUID().uuidString
        do {
            switch command {
            case .step:
                try await step(delivery.decodeCommand(StepCommand.self), logger: logger)
            case .start:
                try await start(delivery.decodeCommand(ConversationStart.self), logger: logger)
            case .message:
                try await message(delivery.decodeCommand(UserMessage.self), messageID: messageID, logger: logger)
            case .pause:
                try await pause(delivery.decodeCommand(ConversationTarget.self).conversationID)
            case .resume:
                try await resume(delivery.decodeCommand(ConversationTarget.self).conversationID)
            case .stop:
                try await stop(delivery.decodeCommand(ConversationTarget.self).conversationID)
            case .delete:
                try await delete(delivery.decodeCommand(ConversationTarget.self).conversationID)
            case .sandboxReady:
                try await sandboxReady(delivery.decodeCommand(SandboxReady.self), logger: logger)
            case .sandboxFailed:
                try await sandboxFailed(delivery.decodeCommand(SandboxFailed.self))
            }
            delivery.ack()
        } catch {
            await bus.settle(
                failed: delivery,
                error: error,
                from: topology.conversationQueue,
                maxAttempts: command == .step
                    ? configuration.maxAttempts : RetryDelay.attempts(spanning: agent.commandRetryFor),
                logger: logger
            )
        }
    }

    // MARK: Publishing

    /// Publishes stored events on `conversation.<id>` (after their commit; nobody need be listening).
    func publish(_ events: [Event], conversation: UUID) async throws {
        for event in events {
            try await bus.publishConversationEvent(
                conversation,
                event: event.id ?? -1,
                json: Array(event.json.serialized.utf8)
            )
        }
    }

    /// Publishes step `step` (confirmed), then records that it was published.
    func publishStep(_ step: Int, conversation: UUID) async throws {
        let command = StepCommand(conversationID: conversation, step: step)
        try await bus.send(
            ConversationCommand.step.rawValue,
            command,
            to: topology.conversationQueue,
            messageID: command.messageID
        )
        try await store.markStepPublished(conversation, step: step)
    }

    /// When the chain runs but its current step was never confirmed published (a worker died between the
    /// commit that started it and the publish), publishes it.
    func ensureChainPublished(_ conversation: UUID) async throws {
        guard let record = try await store.conversation(conversation) else { return }
        try await ensureChainPublished(record)
    }

    /// ``ensureChainPublished(_:)`` for a conversation row already read.
    func ensureChainPublished(_ record: ConversationRecord) async throws {
        if record.agentState == .running, record.stepPublished < record.stepSeq {
            try await publishStep(record.stepSeq, conversation: record.id)
        }
    }

    /// Publishes the conversation's last `count` events again. A command that finds its work done (a
    /// redelivery) may come from a worker that committed its events and died before publishing them; gateways
    /// fill a hole in the ids only when a later event arrives, so what may be missing is the tail — and they
    /// drop ids they have sent, so publishing it again is harmless. A command appends at most three events.
    func republishTail(_ record: ConversationRecord, count: Int = 3) async throws {
        let tail = try await store.events(record.id, after: record.eventCount - count - 1)
        try await publish(tail.map(\.event), conversation: record.id)
    }

    /// ``republishTail(_:count:)`` of a conversation not read yet (nothing when it is gone).
    func republishTail(_ id: UUID) async throws {
        guard let record = try await store.conversation(id) else { return }
        try await republishTail(record)
    }

    /// Asks the runtime workers for the conversation's sandbox (they wake a paused or stopped one), on the
    /// backend the conversation asked for, else this worker's.
    func requestSandbox(_ conversation: UUID) async throws {
        let backend = try await store.runtime(of: conversation) ?? configuration.sandboxBackend
        try await bus.send(
            RuntimeCommand.provision.rawValue,
            ProvisionRequest(conversationID: conversation, backend: backend),
            to: topology.runtimeQueue
        )
    }

    /// The masker of a conversation's secrets: the model keys, the sandbox's session key and the values of the
    /// sandboxes' environment (`runtime.environment`).
    func masker(for record: ConversationRecord?, sandbox: SandboxEndpoint? = nil) -> SecretMasker {
        SecretMasker(
            [configuration.llm.apiKey, record.flatMap { try? modelKey(of: $0) }, sandbox?.sessionAPIKey]
                + configuration.sandboxSecrets
        )
    }
}
