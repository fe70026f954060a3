import DeckhandCore
import Foundation
import Postgres

/// One row of `conversations`, as the conversation workers read it.
public struct ConversationRecord: Sendable, Equatable {
    public var id: UUID
    public var userID: UUID
    public var status: ConversationStatus
    public var agentState: AgentState
    public var runtimeStatus: String?
    public var sandboxID: UUID?
    public var llmModel: String?
    public var llmBaseURL: String?
    /// A secret: never logged.
    public var llmAPIKey: String?
    public var iteration: Int
    public var maxIterations: Int
    public var maxBudget: Double?
    public var metrics: LLMMetrics
    /// The step the chain expects next (DESIGN §4).
    public var stepSeq: Int
    /// The highest step whose message the broker confirmed.
    public var stepPublished: Int
    public var eventCount: Int
    public var lastError: String?
    public var instructions: String?
    public var hasReplay: Bool
    public var replayPosition: Int
    public var resumeOnReady: Bool
    /// When the row was made: with the id, names one conversation (an id may be chosen again after a deletion).
    public var createdAt: Date

    public static let columns = columns(qualifiedBy: "")

    /// The select list, each column qualified by `alias` (`c.`) for queries that join other tables.
    public static func columns(qualifiedBy alias: String) -> String {
        let names = [
            "id", "user_id", "status", "agent_state", "runtime_status", "sandbox_id", "llm_model", "llm_base_url",
            "llm_api_key", "iteration", "max_iterations", "max_budget_per_task", "prompt_tokens", "completion_tokens",
            "cache_read_tokens", "cache_write_tokens", "accumulated_cost", "step_seq", "step_published", "event_count",
            "last_error", "conversation_instructions", "replay_position", "resume_on_ready", "created_at",
        ]
        return names.map { "\(alias)\($0)" }.joined(separator: ", ") + ", \(alias)replay IS NOT NULL AS has_replay"
    }

    public init(row: PostgresRow) throws {
        id = try row.decode(UUID.self, "id")
        userID = try row.decode(UUID.self, "user_id")
        status = ConversationStatus(rawValue: try row.decode(String.self, "status")) ?? .error
        agentState = AgentState(rawValue: try row.decode(String.self, "agent_state")) ?? .error
        runtimeStatus = try row.decode(String?.self, "runtime_status")
        sandboxID = try row.decode(UUID?.self, "sandbox_id")
        llmModel = try row.decode(String?.self, "llm_model")
        llmBaseURL = try row.decode(String?.self, "llm_base_url")
        llmAPIKey = try row.decode(String?.self, "llm_api_key")
        iteration = try row.decode(Int.self, "iteration")
        maxIterations = try row.decode(Int.self, "max_iterations")
        maxBudget = try row.decode(Double?.self, "max_budget_per_task")
        metrics = LLMMetrics(
            accumulatedCost: try row.decode(Double.self, "accumulated_cost"),
            promptTokens: try row.decode(Int.self, "prompt_tokens"),
            completionTokens: try row.decode(Int.self, "completion_tokens"),
            cacheReadTokens: try row.decode(Int.self, "cache_read_tokens"),
            cacheWriteTokens: try row.decode(Int.self, "cache_write_tokens")
        )
        stepSeq = try row.decode(Int.self, "step_seq")
        stepPublished = try row.decode(Int.self, "step_published")
        eventCount = try row.decode(Int.self, "event_count")
        lastError = try row.decode(String?.self, "last_error")
        instructions = try row.decode(String?.self, "conversation_instructions")
        hasReplay = try row.decode(Bool.self, "has_replay")
        replayPosition = try row.decode(Int.self, "replay_position")
        resumeOnReady = try row.decode(Bool.self, "resume_on_ready")
        createdAt = try row.decode(Date.self, "created_at")
    }
}

/// What a conversation's sandbox looks like to the agent.
public struct SandboxEndpoint: Sendable, Equatable {
    public var id: UUID
    public var status: String
    public var url: String?
    /// A secret: never logged, never in an event.
    public var sessionAPIKey: String?

    public init(id: UUID, status: String, url: String?, sessionAPIKey: String?) {
        self.id = id
        self.status = status
        self.url = url
        self.sessionAPIKey = sessionAPIKey
    }

    /// Whether actions can be sent to it now.
    public var isRunning: Bool { status == "running" && url != nil }
}
