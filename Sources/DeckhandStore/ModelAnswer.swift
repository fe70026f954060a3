import DeckhandCore
import Foundation
import Postgres

/// The model's answer to one step (or the replayed action), with what it cost: a row of `llm_calls` and the
/// usage it adds to its conversation. Stored in the transaction of the step's first event
/// (``ConversationStore/storeAnswer(_:_:_:)``), so a step commits once for the answer and its first action.
public struct ModelAnswer: Sendable, Equatable {
    public var step: Int
    /// The Chat Completions response, or `{"replay": action}`.
    public var response: String
    /// The last event id the prompt included.
    public var historyEnd: Int
    /// The model asked, or `replay`.
    public var model: String
    public var promptTokens: Int
    public var completionTokens: Int
    public var cachedTokens: Int
    public var cost: Double
    public var attempts: Int
    public var duration: Duration
    /// A replayed action: moves the conversation's replay position.
    public var replayed: Bool

    public init(
        step: Int,
        response: String,
        historyEnd: Int,
        model: String,
        promptTokens: Int = 0,
        completionTokens: Int = 0,
        cachedTokens: Int = 0,
        cost: Double = 0,
        attempts: Int = 1,
        duration: Duration = .zero,
        replayed: Bool
    ) {
        self.step = step
        self.response = response
        self.historyEnd = historyEnd
        self.model = model
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.cost = cost
        self.attempts = attempts
        self.duration = duration
        self.replayed = replayed
    }

    /// The conversation's usage once this answer is added to `metrics` (what the `UPDATE` of
    /// ``ConversationStore/storeAnswer(_:_:_:)`` makes of the row that held `metrics`).
    public func adding(to metrics: LLMMetrics) -> LLMMetrics {
        var metrics = metrics
        metrics.accumulatedCost += cost
        metrics.promptTokens += promptTokens
        metrics.completionTokens += completionTokens
        metrics.cacheReadTokens += cachedTokens
        return metrics
    }
}

extension ConversationStore {
    /// Stores `answer` (once: a redelivered step keeps the first) and adds its usage, one iteration and, for a
    /// replayed action, one replay position to the conversation. False when the conversation is gone.
    @discardableResult
    public static func storeAnswer(_ connection: PostgresConnection, _ id: UUID, _ answer: ModelAnswer) throws -> Bool {
        try connection.execute(
            """
            WITH stored AS (
                INSERT INTO llm_calls (conversation_id, step, response, history_end, model, prompt_tokens,
                    completion_tokens, cost, attempts, duration_ms)
                VALUES ($1, $7, $8, $9, $10, $2, $3, $5, $11, $12)
                ON CONFLICT DO NOTHING
            )
            UPDATE conversations SET prompt_tokens = prompt_tokens + $2, completion_tokens = completion_tokens + $3,
                cache_read_tokens = cache_read_tokens + $4, accumulated_cost = accumulated_cost + $5,
                iteration = iteration + 1, replay_position = replay_position + $6, updated_at = now()
            WHERE id = $1
            """,
            [
                .uuid(id), .int(Int64(answer.promptTokens)), .int(Int64(answer.completionTokens)),
                .int(Int64(answer.cachedTokens)), .double(answer.cost), .int(answer.replayed ? 1 : 0),
                .int(Int64(answer.step)), .jsonb(answer.response), .int(Int64(answer.historyEnd)),
                .text(answer.model), .int(Int64(answer.attempts)), .double(answer.duration.milliseconds),
            ]
        ) == 1
    }
}
