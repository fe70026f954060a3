/// The log-metadata keys of every Deckhand process, in one dotted style so logs join up across processes.
public enum LogKey: String, Sendable, CaseIterable {
    case conversationID = "deckhand.conversation.id"
    case sandboxID = "deckhand.sandbox.id"
    case step = "deckhand.step"
    case component = "deckhand.component"
    /// The worker's id (``makeWorkerID()`` in Messaging).
    case worker = "deckhand.worker"
    /// The W3C trace id of the request or command the line belongs to.
    case traceID = "trace.id"
    case errorCode = "deckhand.error.code"
    case error = "deckhand.error"
    case amqpMessageID = "amqp.message.id"
    case amqpMessageType = "amqp.message.type"
    case amqpQueue = "amqp.queue"
    case amqpConnection = "amqp.connection"
    case amqpAttempt = "amqp.attempt"
    case llmModel = "llm.model"
    case llmAttempt = "llm.attempt"
    case agentState = "deckhand.agent.state"
    case httpMethod = "http.method"
    case httpPath = "http.path"
    case httpAddress = "http.address"
    /// How many deliveries a draining consumer still has in hand.
    case inFlight = "deckhand.in_flight"
    /// The event ids a condensation forgot (`start-end`).
    case forgotten = "deckhand.forgotten"
    /// Why something was given up or refused.
    case reason = "deckhand.reason"
    case sandboxReference = "deckhand.sandbox.reference"
    case backends = "deckhand.backends"
    /// Warm-pool sandboxes ready and starting.
    case warmPool = "deckhand.pool"
    case warmStarting = "deckhand.starting"
    case workspace = "sandbox.workspace"
    case upload = "sandbox.upload"
    case amqpGeneration = "amqp.generation"
    case llmRetryIn = "llm.retry_in"
    case postgresMigration = "postgres.migration"
    case postgresBackendPID = "postgres.backend_pid"
    case postgresChannel = "postgres.channel"
    case durationMilliseconds = "duration.ms"
    /// How many quiet chains the chain watchdog found.
    case quietChains = "deckhand.quiet_chains"
    /// How many times the chain watchdog restarted this step.
    case restarts = "deckhand.restarts"
    /// The node a process runs on (`node.id`), or a sandbox's node.
    case node = "deckhand.node"
    /// How many rows a statement changed.
    case rows = "deckhand.rows"
}
