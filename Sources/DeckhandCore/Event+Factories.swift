/// The events every role writes: messages, the system prompt, state changes, errors.
extension Event {
    /// A `message` action from the user.
    public static func userMessage(_ content: String, imageURLs: [String] = []) -> Event {
        Event(
            source: .user,
            message: content,
            kind: .action("message"),
            args: [
                "content": .string(content),
                "image_urls": .array(imageURLs.map(JSONValue.string)),
                "file_urls": [],
                "wait_for_response": false,
            ]
        )
    }

    /// A `message` action from the agent; `waitForResponse` hands the turn to the user.
    public static func agentMessage(_ content: String, waitForResponse: Bool) -> Event {
        Event(
            source: .agent,
            message: content,
            kind: .action("message"),
            args: [
                "content": .string(content),
                "image_urls": [],
                "file_urls": [],
                "wait_for_response": .bool(waitForResponse),
            ]
        )
    }

    /// The `system` action that opens a conversation: the system prompt and the tools offered to the model.
    public static func system(_ content: String, tools: JSONValue) -> Event {
        Event(
            source: .agent,
            message: content,
            kind: .action("system"),
            args: [
                "content": .string(content), "tools": tools, "openhands_version": "deckhand",
                "agent_class": "CodeActAgent",
            ]
        )
    }

    /// An `agent_state_changed` observation.
    public static func stateChanged(_ state: AgentState, reason: String = "") -> Event {
        Event(
            source: .environment,
            kind: .observation("agent_state_changed"),
            content: "",
            extras: ["agent_state": .string(state.rawValue), "reason": .string(reason)]
        )
    }

    /// An `error` observation (`cause`: the action it answers, if any).
    public static func errorObservation(
        _ content: String,
        errorID: String = "",
        cause: Int? = nil,
        toolCallMetadata: ToolCallMetadata? = nil
    ) -> Event {
        Event(
            source: .environment,
            message: content,
            cause: cause,
            kind: .observation("error"),
            content: content,
            extras: ["error_id": .string(errorID)],
            toolCallMetadata: toolCallMetadata
        )
    }

    /// Whether this is the user's `message` action.
    public var isUserMessage: Bool { source == .user && action == "message" }

    /// The state an `agent_state_changed` observation announces.
    public var announcedState: AgentState? {
        guard observation == "agent_state_changed" else { return nil }
        return extras["agent_state"]?.stringValue.flatMap(AgentState.init(rawValue:))
    }
}
