import DeckhandCore
import Foundation
import Postgres

/// The conversation workers' writes that move a conversation: chains started and ended, the agent's state,
/// the sandbox's arrival or failure, the step lock. Each runs on a connection inside the caller's transaction
/// (or a step's reserved connection); the states they move from come from ``AgentStateMachine``.
extension ConversationStore {
    /// Moves an agent in one of `states` to `running` with the next step number; returns that step (nil when
    /// the agent is in none of them: a chain runs already, or the command does not apply).
    public static func startChain(
        _ connection: PostgresConnection,
        _ id: UUID,
        from states: [AgentState]
    ) throws -> Int? {
        try connection.query(
            """
            UPDATE conversations SET agent_state = $3, step_seq = step_seq + 1, resume_on_ready = false,
                status = $4, last_error = NULL, updated_at = now()
            WHERE id = $1 AND agent_state = ANY($2::text[])
            RETURNING step_seq
            """,
            [
                .uuid(id), .text(AgentStateMachine.sqlArray(states)), .text(AgentState.running.rawValue),
                .text(ConversationStatus.running.rawValue),
            ]
        ).first?.decode(Int.self, "step_seq")
    }

    /// Stores what a conversation's first `start` brings: its instructions and the trajectory to replay.
    public static func storeOpening(
        _ connection: PostgresConnection,
        _ id: UUID,
        instructions: String?,
        replay: JSONValue?
    ) throws {
        try connection.execute(
            "UPDATE conversations SET conversation_instructions = $2, replay = $3::jsonb WHERE id = $1",
            [.uuid(id), .optional(instructions.map(PostgresValue.text)), replay.map { .jsonb($0.serialized) } ?? .null]
        )
    }

    /// Records that `consumer` handled the message `messageID`; false when it had before.
    public static func markProcessed(
        _ connection: PostgresConnection,
        consumer: String,
        messageID: String
    ) throws -> Bool {
        try connection.execute(
            "INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [.text(consumer), .text(messageID)]
        ) == 1
    }

    /// Moves the agent to `loading` (waiting for its sandbox); `resumeOnReady`: its task goes on once the
    /// sandbox answers.
    public static func moveToLoading(_ connection: PostgresConnection, _ id: UUID, resumeOnReady: Bool) throws {
        try connection.execute(
            """
            UPDATE conversations SET agent_state = $2, status = $3, runtime_status = $4, resume_on_ready = $5,
                updated_at = now()
            WHERE id = $1
            """,
            [
                .uuid(id), .text(AgentState.loading.rawValue), .text(ConversationStatus.starting.rawValue),
                .text(RuntimeStatus.startingRuntime.rawValue), .bool(resumeOnReady),
            ]
        )
    }

    /// The agent's task goes on once its sandbox answers.
    public static func resumeOnReady(_ connection: PostgresConnection, _ id: UUID) throws {
        try connection.execute("UPDATE conversations SET resume_on_ready = true WHERE id = $1", [.uuid(id)])
    }

    /// Moves the agent from one of `states` to `state` (and the conversation to `status`); false when it is in
    /// none of them.
    public static func transition(
        _ connection: PostgresConnection,
        _ id: UUID,
        from states: [AgentState],
        to state: AgentState,
        status: ConversationStatus? = nil
    ) throws -> Bool {
        try connection.execute(
            """
            UPDATE conversations SET agent_state = $2, status = coalesce($3, status), updated_at = now()
            WHERE id = $1 AND agent_state = ANY($4::text[])
            """,
            [
                .uuid(id), .text(state.rawValue), .optional(status.map { .text($0.rawValue) }),
                .text(AgentStateMachine.sqlArray(states)),
            ]
        ) == 1
    }

    /// Sets the agent's state, whatever it was (the caller checked the transition under the row lock).
    public static func setAgentState(_ connection: PostgresConnection, _ id: UUID, _ state: AgentState) throws {
        try connection.execute(
            "UPDATE conversations SET agent_state = $2 WHERE id = $1",
            [.uuid(id), .text(state.rawValue)]
        )
    }

    /// The conversation's sandbox answers: it is the conversation's, and the runtime is ready.
    public static func sandboxReady(_ connection: PostgresConnection, _ id: UUID, sandbox: UUID) throws {
        try connection.execute(
            """
            UPDATE conversations SET sandbox_id = $2, runtime_status = $3, status = $4, updated_at = now()
            WHERE id = $1
            """,
            [
                .uuid(id), .uuid(sandbox), .text(RuntimeStatus.ready.rawValue),
                .text(ConversationStatus.running.rawValue),
            ]
        )
    }

    /// Ends the agent in `error` with `reason` if it is in one of `states` (and `step_seq` is `step`, when
    /// given: the chain moves on to the next step); false when it is not.
    public static func endInError(
        _ connection: PostgresConnection,
        _ id: UUID,
        from states: [AgentState],
        reason: String,
        runtimeStatus: RuntimeStatus? = nil,
        status: ConversationStatus? = nil,
        step: Int? = nil
    ) throws -> Bool {
        try connection.execute(
            """
            UPDATE conversations SET agent_state = $2, last_error = $3, runtime_status = coalesce($4, runtime_status),
                status = coalesce($5, status), step_seq = CASE WHEN $7::bigint IS NULL THEN step_seq ELSE $7 + 1 END,
                updated_at = now()
            WHERE id = $1 AND agent_state = ANY($6::text[]) AND ($7::bigint IS NULL OR step_seq = $7)
            """,
            [
                .uuid(id), .text(AgentState.error.rawValue), .text(reason),
                .optional(runtimeStatus.map { .text($0.rawValue) }), .optional(status.map { .text($0.rawValue) }),
                .text(AgentStateMachine.sqlArray(states)), .optional(step.map { .int(Int64($0)) }),
            ]
        ) == 1
    }

    /// Ends a running chain at `step` in `error` (``endInError(_:_:from:reason:runtimeStatus:status:step:)``)
    /// and appends why: an `error` observation with `errorID` and the state change. Call it inside a
    /// transaction. Returns the stored events; empty when the agent was no longer running at that step.
    public static func failChain(
        _ connection: PostgresConnection,
        _ id: UUID,
        step: Int,
        reason: String,
        errorID: String,
        runtimeStatus: RuntimeStatus? = nil,
        masker: SecretMasker
    ) throws -> [Event] {
        let sources = AgentStateMachine.sources(of: .stepFailed)
        guard try endInError(connection, id, from: sources, reason: reason, runtimeStatus: runtimeStatus, step: step)
        else { return [] }
        return try append(
            connection,
            id,
            [.errorObservation(reason, errorID: errorID), .stateChanged(.error, reason: reason)],
            step: step,
            masker: masker
        )
    }

    /// Whether a user message was stored after event `historyEnd` (it keeps a chain going).
    public static func userMessage(_ connection: PostgresConnection, _ id: UUID, after historyEnd: Int) throws -> Bool {
        try connection.query(
            """
            SELECT EXISTS (SELECT 1 FROM events WHERE conversation_id = $1 AND id > $2 AND source = 'user'
                AND kind = 'message') AS newer
            """,
            [.uuid(id), .int(Int64(historyEnd))]
        ).first?.decode(Bool.self, "newer") ?? false
    }

    /// Ends step `step` with the chain going on: the next step is `step + 1`.
    public static func advanceStep(_ connection: PostgresConnection, _ id: UUID, after step: Int) throws {
        try connection.execute(
            "UPDATE conversations SET step_seq = $2 + 1, updated_at = now() WHERE id = $1",
            [.uuid(id), .int(Int64(step))]
        )
    }

    /// Ends step `step` and the chain with it: the agent rests in `state`; `resumeOnReady`: it waits for its
    /// sandbox (`starting runtime`) to go on with its task.
    public static func endChain(
        _ connection: PostgresConnection,
        _ id: UUID,
        after step: Int,
        in state: AgentState,
        resumeOnReady: Bool
    ) throws {
        try connection.execute(
            """
            UPDATE conversations SET agent_state = $3, step_seq = $2 + 1, updated_at = now(),
                resume_on_ready = $4, runtime_status = CASE WHEN $4 THEN $5 ELSE runtime_status END
            WHERE id = $1
            """,
            [
                .uuid(id), .int(Int64(step)), .text(state.rawValue), .bool(resumeOnReady),
                .text(RuntimeStatus.startingRuntime.rawValue),
            ]
        )
    }

    /// The replayed trajectory's action at `position`, as stored; nil past its end.
    public static func replayAction(_ connection: PostgresConnection, _ id: UUID, at position: Int) throws -> String? {
        try connection.query(
            "SELECT replay -> $2::int AS action FROM conversations WHERE id = $1",
            [.uuid(id), .int(Int64(position))]
        ).first?.decode(String?.self, "action")
    }

    /// Records that the broker confirmed step `step` of the conversation.
    public func markStepPublished(_ id: UUID, step: Int) async throws {
        try await postgres.execute(
            "UPDATE conversations SET step_published = greatest(step_published, $2) WHERE id = $1",
            [.uuid(id), .int(Int64(step))]
        )
    }

    /// Takes the session advisory lock `key` if it is free (a conversation's step chain: ``stepLockKey(_:)``).
    public static func tryLock(_ connection: PostgresConnection, _ key: Int64) throws -> Bool {
        try connection.query("SELECT pg_try_advisory_lock($1) AS locked", [.int(key)]).first?.decode(
            Bool.self,
            "locked"
        ) ?? false
    }

    /// Releases the session advisory lock `key`.
    public static func unlock(_ connection: PostgresConnection, _ key: Int64) throws {
        try connection.execute("SELECT pg_advisory_unlock($1)", [.int(key)])
    }
}
