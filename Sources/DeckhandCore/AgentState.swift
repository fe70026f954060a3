/// OpenHands' agent states (lower case on the wire), kept in `conversations.agent_state`.
public enum AgentState: String, Sendable, Codable, CaseIterable {
    /// Waiting for a sandbox (a new conversation, or one whose sandbox is being woken).
    case loading
    /// A step chain runs.
    case running
    /// The agent answered without a tool call and waits for the user.
    case awaitingUserInput = "awaiting_user_input"
    case paused
    case stopped
    /// The agent called `finish`.
    case finished
    case rejected
    /// A limit was reached or something failed; the reason is in the `agent_state_changed` event.
    case error
    case awaitingUserConfirmation = "awaiting_user_confirmation"
    case userConfirmed = "user_confirmed"
    case userRejected = "user_rejected"
    case rateLimited = "rate_limited"

    /// States without a step chain, from which a user message starts one.
    public static let idle: [AgentState] = [.awaitingUserInput, .finished, .error, .rejected, .userRejected]
}

/// `conversations.status` (OpenHands' `ConversationStatus`).
public enum ConversationStatus: String, Sendable, Codable, CaseIterable {
    case starting = "STARTING"
    case running = "RUNNING"
    case stopped = "STOPPED"
    case archived = "ARCHIVED"
    case error = "ERROR"
}

/// OpenHands' runtime status ids (`conversations.runtime_status`), shown to users as the state of the
/// sandbox and of the model behind a conversation.
public enum RuntimeStatus: String, Sendable, Codable, CaseIterable {
    case startingRuntime = "STATUS$STARTING_RUNTIME"
    case runtimeStarted = "STATUS$RUNTIME_STARTED"
    case ready = "STATUS$READY"
    case error = "STATUS$ERROR"
    case errorRuntimeDisconnected = "STATUS$ERROR_RUNTIME_DISCONNECTED"
    case errorLLMAuthentication = "STATUS$ERROR_LLM_AUTHENTICATION"
    case errorLLMServiceUnavailable = "STATUS$ERROR_LLM_SERVICE_UNAVAILABLE"
    case errorLLMInternalServerError = "STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR"
    case errorLLMOutOfCredits = "STATUS$ERROR_LLM_OUT_OF_CREDITS"
    case errorLLMContentPolicyViolation = "STATUS$ERROR_LLM_CONTENT_POLICY_VIOLATION"
    case llmRetry = "STATUS$LLM_RETRY"
}
