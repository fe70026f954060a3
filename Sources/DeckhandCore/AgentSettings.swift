/// How conversation workers run the agent (`agent.*` keys).
public struct AgentSettings: Sendable {
    /// `agent.max_iterations`: model calls a conversation may make before it ends in `error` (when the
    /// conversation sets none).
    public var maxIterations: Int = 100
    /// `agent.max_budget`: USD a conversation may spend on the model before it ends in `error` (0: no limit;
    /// when the conversation sets none).
    public var maxBudget: Double = 0
    /// `agent.condense_after_tokens`: when the model's prompt passes this many tokens, the middle of the
    /// history is replaced by a summary (0: never).
    public var condenseAfterTokens: Int = 120_000
    /// `agent.condense_keep_first`: events kept at the start of the history when condensing.
    public var condenseKeepFirst: Int = 4
    /// `agent.condense_keep_recent`: events kept at the end of the history when condensing.
    public var condenseKeepRecent: Int = 20
    /// `agent.observation_max_chars`: an observation longer than this is cut in the middle in the model's view.
    public var observationMaxChars: Int = 20_000
    /// `agent.action_timeout`: the hard limit of one sandbox action (a `run` may ask for less).
    public var actionTimeout: Duration = .seconds(120)
    /// `agent.shutdown_timeout`: how long a stopping worker lets the steps in flight finish.
    public var shutdownTimeout: Duration = .seconds(30)
    /// `agent.step_lock_wait`: how long a copy of a step waits for the copy that holds the conversation.
    public var stepLockWait: Duration = .seconds(30)
    /// `agent.step_watchdog`: a running conversation quiet this long with no copy of its step holding it has
    /// lost its step (retries exhausted, dead-lettered, never published): its step is published again. Longer
    /// than the retry path (1 + 5 + 30 + 30 s), so a step waiting for a retry is left alone.
    public var stepWatchdog: Duration = .seconds(120)
    /// `agent.step_restarts`: restarts of one step before its chain ends in `error` (the user's next message
    /// starts it again).
    public var stepRestarts: Int = 3
    /// `agent.command_retry_for`: how long a user's command (a message, start, pause, resume, stop, delete)
    /// and a runtime worker's answer are retried through an outage before they go to the dead queue. A
    /// message that got its 2xx is then kept through an outage this long. (A step has its own few attempts:
    /// the watchdog restarts a step that died.)
    public var commandRetryFor: Duration = .seconds(900)

    public init() {}

    static let keys: Set<String> = [
        "agent.max_iterations", "agent.max_budget", "agent.condense_after_tokens", "agent.condense_keep_first",
        "agent.condense_keep_recent", "agent.observation_max_chars", "agent.action_timeout",
        "agent.shutdown_timeout", "agent.step_lock_wait", "agent.step_watchdog", "agent.step_restarts",
        "agent.command_retry_for",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        maxIterations = try reader.int("agent.max_iterations", default: maxIterations, range: 1...100_000)
        if let text = reader.optionalString("agent.max_budget") {
            guard let value = Double(text), value >= 0, value.isFinite else {
                throw reader.invalid("agent.max_budget", expected: "a number of USD, 0 for no limit", got: text)
            }
            maxBudget = value
        }
        condenseAfterTokens = try reader.int(
            "agent.condense_after_tokens",
            default: condenseAfterTokens,
            range: 0...100_000_000
        )
        condenseKeepFirst = try reader.int("agent.condense_keep_first", default: condenseKeepFirst, range: 1...1000)
        condenseKeepRecent = try reader.int(
            "agent.condense_keep_recent",
            default: condenseKeepRecent,
            range: 1...10_000
        )
        observationMaxChars = try reader.int(
            "agent.observation_max_chars",
            default: observationMaxChars,
            range: 100...10_000_000
        )
        actionTimeout = try reader.duration("agent.action_timeout", default: actionTimeout, minimum: .seconds(1))
        shutdownTimeout = try reader.duration("agent.shutdown_timeout", default: shutdownTimeout)
        stepLockWait = try reader.duration("agent.step_lock_wait", default: stepLockWait, minimum: .milliseconds(10))
        stepWatchdog = try reader.duration("agent.step_watchdog", default: stepWatchdog, minimum: .milliseconds(100))
        stepRestarts = try reader.int("agent.step_restarts", default: stepRestarts, range: 0...1000)
        commandRetryFor = try reader.duration("agent.command_retry_for", default: commandRetryFor)
    }
}
