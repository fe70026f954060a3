import DeckhandCore
import Foundation
import Postgres

/// What the conversation workers' chain watchdog reads and claims (`ChainWatchdog`).
extension ConversationStore {
    /// What a look at one quiet chain found.
    public enum ChainCheck: Sendable, Equatable {
        /// A copy of its step holds the conversation: the chain is alive.
        case busy
        /// It moved (a step ended, the user paused it) or is gone since it was listed.
        case moved
        /// This worker claimed its restart: step `step` is to be published again, the `restarts`-th time.
        case restart(step: Int, restarts: Int)
    }

    /// Conversations in `state` (`running`: a step should be in flight; `loading`: a sandbox should be on its
    /// way) with no change for `quietFor` (no event, no step end), oldest first.
    public func quietChains(in state: AgentState = .running, quietFor: Duration, limit: Int) async throws -> [UUID] {
        try await postgres.query(
            """
            SELECT id FROM conversations
            WHERE agent_state = $1 AND NOT deleting AND updated_at < now() - $2 * interval '1 millisecond'
            ORDER BY updated_at LIMIT $3
            """,
            [.text(state.rawValue), .int(Int64(quietFor.milliseconds)), .int(Int64(limit))]
        ).map { try $0.decode(UUID.self, "id") }
    }

    /// Claims the restart of `id`'s chain if no copy of its step holds the conversation's step lock and it is
    /// still in `state` and quiet: counts the restart (from 1 again when the step moved since the last one)
    /// and marks the row changed, so that no other worker claims it before `quietFor` passes again.
    public func claimRestart(_ id: UUID, in state: AgentState = .running, quietFor: Duration) async throws -> ChainCheck
    {
        let key = stepLockKey(id)
        return try await postgres.withConnection { connection in
            guard try Self.tryLock(connection, key) else { return .busy }
            defer { try? Self.unlock(connection, key) }
            guard
                let row = try connection.query(
                    """
                    UPDATE conversations SET updated_at = now(),
                        watchdog_restarts = CASE WHEN watchdog_step = step_seq THEN watchdog_restarts + 1 ELSE 1 END,
                        watchdog_step = step_seq
                    WHERE id = $1 AND agent_state = $2 AND NOT deleting
                        AND updated_at < now() - $3 * interval '1 millisecond'
                    RETURNING step_seq, watchdog_restarts
                    """,
                    [.uuid(id), .text(state.rawValue), .int(Int64(quietFor.milliseconds))]
                ).first
            else { return .moved }
            return .restart(
                step: try row.decode(Int.self, "step_seq"),
                restarts: try row.decode(Int.self, "watchdog_restarts")
            )
        }
    }
}
