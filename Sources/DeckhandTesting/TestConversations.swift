import AMQP
import Agent
import ConversationWorker
import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import Logging
import Messaging
import Postgres
import RuntimeManager
import Synchronization

/// A conversation-worker test bed on top of ``TestRuntime``: the scripted model (``FakeLLM``) on loopback,
/// a user, a collector of every event published on the events exchange, and factories for conversation
/// workers (in this process or as `deckhand conversation-worker` child processes).
public final class TestConversations: Sendable {
    public let runtime: TestRuntime
    public let llm: FakeLLM
    /// `http://127.0.0.1:<port>/v1`.
    public let llmBaseURL: String
    public let store: ConversationStore
    public let userID: UUID
    private let published: AMQPConsumer
    private let collected = Collected()

    private init(runtime: TestRuntime, llm: FakeLLM, llmBaseURL: String) async throws {
        self.runtime = runtime
        self.llm = llm
        self.llmBaseURL = llmBaseURL
        store = ConversationStore(
            postgres: runtime.postgres,
            deployment: runtime.namespace,
            sealer: try? StoredKeySealer(secret: Self.keySecret)
        )
        userID = UUID()
        try await store.ensureUser(userID, name: "test")
        let queue = "\(runtime.namespace).test-events"
        _ = try await runtime.connection.declare(
            AMQPQueue(name: queue, kind: .classic, durable: false, exclusive: true, autoDelete: true)
        )
        try await runtime.connection.bind(
            AMQPBinding(
                queue: queue,
                exchange: runtime.topology.eventsExchange,
                routingKey: ConversationEvents.everyConversation
            )
        )
        published = try await runtime.connection.consume(queue: queue, prefetch: 1000)
        let published = published
        let collected = collected
        Task {
            do {
                for try await delivery in published {
                    if let event = try? JSONValue(parsing: delivery.message.body),
                        let key = ConversationEvents.identify(delivery)?.conversation
                    {
                        collected.events.withLock { $0[key, default: []].append(event) }
                    }
                    delivery.ack()
                }
            } catch {}
        }
    }

    /// Runs `body` with a fresh test bed (a fake model answering after `latency`) and tears it down.
    public static func with<T: Sendable>(
        latency: Duration = .zero,
        _ body: @Sendable (TestConversations) async throws -> T
    ) async throws -> T {
        try await TestRuntime.with(consumeReplies: false) { runtime in
            let llm = FakeLLM(latency: latency)
            return try await llm.serve { baseURL in
                let bed = try await TestConversations(runtime: runtime, llm: llm, llmBaseURL: baseURL)
                let result: Result<T, any Error>
                do {
                    result = .success(try await body(bed))
                } catch {
                    result = .failure(error)
                }
                await bed.published.cancel()
                return try result.get()
            }
        }
    }

    // MARK: Workers

    /// Agent settings for tests.
    public static func agentSettings(_ configure: (inout AgentSettings) -> Void = { _ in }) -> AgentSettings {
        var settings = AgentSettings()
        settings.shutdownTimeout = .seconds(20)
        settings.stepLockWait = .seconds(20)
        configure(&settings)
        return settings
    }

    /// Model settings pointing at the fake: quick retries.
    public func llmSettings(_ configure: (inout LLMSettings) -> Void = { _ in }) -> LLMSettings {
        var settings = LLMSettings()
        settings.baseURL = llmBaseURL
        settings.apiKey = "sk-test-worker-key"
        settings.model = "unscripted"
        settings.retryMin = .milliseconds(20)
        settings.retryMax = .milliseconds(500)
        settings.timeout = .seconds(30)
        settings.keySecret = Self.keySecret
        configure(&settings)
        return settings
    }

    /// The `llm.key_secret` of test beds: the stored per-conversation model keys are sealed with it.
    public static let keySecret: [UInt8] = Array(0..<32)
    public static var keySecretHex: String { keySecret.map { String(format: "%02x", $0) }.joined() }

    /// A conversation worker in this process (on `postgres` instead of the bed's client when given: through a
    /// `TCPProxy`, say).
    public func makeWorker(
        agent: AgentSettings = TestConversations.agentSettings(),
        llm: LLMSettings? = nil,
        prefetch: Int = 32,
        sandboxBackend: RuntimeSettings.Backend = .process,
        sandboxSecrets: [String] = [],
        maxAttempts: Int = 5,
        connection: AMQPConnection? = nil,
        consuming: AMQPConnection? = nil,
        postgres: PostgresClient? = nil
    ) -> ConversationWorker {
        var configuration = ConversationWorker.Configuration(
            agent: agent,
            llm: llm ?? llmSettings(),
            prefetch: prefetch,
            maxAttempts: maxAttempts,
            sandboxBackend: sandboxBackend
        )
        configuration.sandboxSecrets = sandboxSecrets
        return ConversationWorker(
            configuration: configuration,
            bus: CommandBus(
                connection: connection ?? runtime.connection,
                consuming: consuming,
                topology: runtime.topology
            ),
            store: postgres.map { ConversationStore(postgres: $0, deployment: store.deployment, sealer: store.sealer) }
                ?? store,
            http: runtime.http,
            logger: Logger(label: "test.conversation.worker")
        )
    }

    /// A runtime worker with process sandboxes (and a warm pool of `warm`); `environment` is every sandbox's
    /// `runtime.environment`.
    public func makeRuntimeWorker(warm: Int = 0, environment: [String: String] = [:]) throws -> RuntimeWorker {
        let settings = TestRuntime.settings { settings in
            if warm > 0 { settings.warmPool = [.init(backend: .process, image: "deckhand-sandbox", size: warm)] }
            settings.environment = environment
        }
        return try runtime.makeWorker(settings: settings, backends: [.process])
    }

    /// `deckhand conversation-worker` (beside the test binary) as a child process on this test bed, against
    /// the fake model, asking for process sandboxes; its log goes to ``workerProcessLog(_:)``. `environment`
    /// adds or overrides `DECKHAND_*` variables.
    public func launchWorkerProcess(name: String, environment: [String: String] = [:]) throws -> Process {
        try runtime.launchDeckhand(
            [
                "conversation-worker", "--namespace", runtime.namespace, "--sandbox-backend", "process", "--worker-id",
                name,
            ],
            variables: [
                "DECKHAND_LLM_BASE_URL": llmBaseURL,
                "DECKHAND_LLM_API_KEY": "sk-test-worker-key",
                "DECKHAND_LLM_KEY_SECRET": Self.keySecretHex,
                "DECKHAND_LLM_RETRY_MIN": "20ms",
                "DECKHAND_LLM_RETRY_MAX": "500ms",
                "DECKHAND_AGENT_STEP_LOCK_WAIT": "20s",
                "DECKHAND_AGENT_SHUTDOWN_TIMEOUT": "20s",
                "DECKHAND_LOG_LEVEL": "notice",
            ].merging(environment) { $1 },
            log: workerProcessLogPath(name)
        )
    }

    private func workerProcessLogPath(_ name: String) -> String { runtime.processRoot + "-\(name).log" }

    /// What the worker process `name` logged (all its launches), for failure messages.
    public func workerProcessLog(_ name: String) -> String {
        (try? String(contentsOfFile: workerProcessLogPath(name), encoding: .utf8)) ?? "(no log)"
    }

    // MARK: Conversations

    /// Creates a conversation that follows `script` and sends `start` with `message` as its first message.
    @discardableResult
    public func start(
        script: FakeLLM.Script,
        message: String? = "Do the task.",
        maxIterations: Int = 100,
        maxBudget: Double? = nil,
        apiKey: String? = nil,
        replay: JSONValue? = nil,
        model: String? = nil
    ) async throws -> UUID {
        let id = UUID()
        let model = model ?? "script-\(id.uuidString.prefix(8).lowercased())"
        llm.register(script, model: model)
        try await store.create(
            .init(
                id: id,
                userID: userID,
                llmModel: model,
                llmAPIKey: apiKey,
                maxIterations: maxIterations,
                maxBudget: maxBudget
            )
        )
        try await send(
            .start,
            ConversationStart(conversationID: id, initialUserMessage: message, replayJSON: replay)
        )
        return id
    }

    /// The model name of a conversation's script.
    public func model(of conversation: UUID) async throws -> String {
        try await store.conversation(conversation)?.llmModel ?? ""
    }

    /// Sends a conversation command.
    public func send<Payload: Encodable & Sendable>(
        _ command: ConversationCommand,
        _ payload: Payload,
        messageID: String = UUID().uuidString
    ) async throws {
        try await runtime.bus.send(
            command.rawValue,
            payload,
            to: runtime.topology.conversationQueue,
            messageID: messageID
        )
    }

    /// Sends a user message.
    public func say(_ text: String, to conversation: UUID, messageID: String = UUID().uuidString) async throws {
        try await send(.message, UserMessage(conversationID: conversation, content: text), messageID: messageID)
    }

    /// Waits until the agent is in one of `states`; fails after `timeout` saying where it is.
    @discardableResult
    public func waitFor(
        _ conversation: UUID,
        _ states: Set<AgentState>,
        timeout: Duration = .seconds(60)
    ) async throws -> ConversationRecord {
        let describe: () async -> String = {
            let last = try? await self.store.conversation(conversation)
            let kinds = (try? await self.events(conversation).map(\.typeName).joined(separator: ",")) ?? "?"
            let state = last?.agentState.rawValue ?? "missing"
            return "it is \(state); events: \(kinds); last error: \(last?.lastError ?? "-")"
        }
        return try await eventuallyValue(
            "conversation \(conversation) in \(states.map(\.rawValue).sorted())",
            timeout: timeout,
            interval: .milliseconds(25),
            describe: describe
        ) {
            guard let record = try await store.conversation(conversation), states.contains(record.agentState) else {
                return nil
            }
            return record
        }
    }

    /// The stored events of a conversation.
    public func events(_ conversation: UUID) async throws -> [Event] {
        try await store.events(conversation).map(\.event)
    }

    /// The events published for a conversation so far (as JSON, in arrival order, duplicates included).
    public func publishedEvents(_ conversation: UUID) -> [JSONValue] {
        collected.events.withLock { $0[conversation] ?? [] }
    }

    /// Where a script's `/workspace/<name>` is on this machine: in the workspace of the conversation's process
    /// sandbox (an isolated sandbox sees nothing else of the host). Waits until the conversation has one.
    public func workspaceFile(_ conversation: UUID, _ name: String) async throws -> String {
        let folder = Mutex<String?>(nil)
        try await eventually("the conversation has a sandbox", timeout: .seconds(60)) {
            let reference = try await runtime.store.liveSandbox(conversation: conversation)?.reference
            folder.withLock { $0 = reference }
            return reference != nil
        }
        return (folder.withLock { $0 } ?? "") + "/workspace/" + name
    }
}

/// The events the test bed's consumer received, per conversation.
private final class Collected: Sendable {
    let events = Mutex<[UUID: [JSONValue]]>([:])
}
