import DeckhandCore

/// Recognises an agent going round in circles, over the events since the last user message:
/// - the same action with the same observation 4 times in a row;
/// - the same action failing (an `error` observation) 3 times in a row;
/// - the same agent message 3 times in a row.
public enum StuckDetector {
    public static func reason(_ events: [StoredEvent]) -> String? {
        let lastUser = events.lastIndex { $0.event.isUserMessage } ?? -1
        let recent = Array(events[(lastUser + 1)...]).map(\.event)

        // Each agent action with the observation that answers it (by cause or by tool call id).
        var pairs: [(action: Event, observation: Event?)] = []
        var messages: [String] = []
        for event in recent {
            if event.source == .agent, let action = event.action, action != "condensation", action != "system" {
                if action == "message" {
                    messages.append(event.args["content"]?.stringValue ?? event.message)
                } else {
                    pairs.append((event, nil))
                }
            } else if event.observation != nil, event.observation != "agent_state_changed" {
                if let index = pairs.lastIndex(where: { pair in
                    pair.observation == nil
                        && ((event.cause != nil && pair.action.id == event.cause)
                            || (event.toolCallMetadata != nil
                                && pair.action.toolCallMetadata?.toolCallID == event.toolCallMetadata?.toolCallID))
                }) {
                    pairs[index].observation = event
                } else if event.observation == "error" {
                    // A call that could not be run counts as an action of its own that failed.
                    pairs.append((event, event))
                }
            }
        }

        if pairs.count >= 4 {
            let last = pairs.suffix(4)
            let first = last.first!
            if last.allSatisfy({ same($0.action, first.action) && same($0.observation, first.observation) }) {
                return "the agent repeated the same action with the same result 4 times"
            }
        }
        if pairs.count >= 3 {
            let last = pairs.suffix(3)
            let first = last.first!
            if last.allSatisfy({ same($0.action, first.action) && $0.observation?.observation == "error" }) {
                return "the same action failed 3 times in a row"
            }
        }
        if messages.count >= 3, Set(messages.suffix(3)).count == 1,
            recent.last(where: { $0.source == .agent && $0.action != nil })?.action == "message"
        {
            return "the agent sent the same message 3 times"
        }
        return nil
    }

    /// Two actions or two observations alike, ignoring ids, times, thoughts, tool call ids and metrics.
    static func same(_ a: Event?, _ b: Event?) -> Bool {
        guard let a, let b else { return a == nil && b == nil }
        guard a.kind == b.kind else { return false }
        if a.action != nil {
            var argsA = a.args
            var argsB = b.args
            argsA["thought"] = nil
            argsB["thought"] = nil
            return argsA == argsB && a.timeout == b.timeout
        }
        return a.content == b.content && (a.extras["metadata"]?["exit_code"] == b.extras["metadata"]?["exit_code"])
    }
}
