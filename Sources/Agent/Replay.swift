import DeckhandCore
import Foundation

/// `replay_json`: an OpenHands trajectory whose agent actions are played back one per step instead of
/// asking a model (OpenHands' replay manager does the same).
public enum Replay {
    /// The actions to replay, in order: the agent's actions other than its system prompt and condensations.
    public static func actions(from trajectory: JSONValue) throws(DeckhandError) -> [Event] {
        let items: [JSONValue]
        switch trajectory {
        case .array(let array): items = array
        case .object:
            guard case .array(let array)? = trajectory["trajectory"] else {
                throw DeckhandError(
                    .protocolViolation,
                    "replay_json must be a JSON array of events (or {\"trajectory\": [...]})"
                )
            }
            items = array
        default:
            throw DeckhandError(.protocolViolation, "replay_json must be a JSON array of events")
        }
        var actions: [Event] = []
        for item in items {
            guard let event = try? Event(json: item), event.source == .agent, let action = event.action,
                !["system", "condensation", "recall", "change_agent_state"].contains(action)
            else { continue }
            var replayed = event
            replayed.id = nil
            replayed.cause = nil
            replayed.timestamp = Date()
            replayed.llmMetrics = nil
            replayed.toolCallMetadata = nil
            actions.append(replayed)
        }
        return actions
    }
}
