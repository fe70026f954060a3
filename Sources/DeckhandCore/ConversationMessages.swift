import Foundation

/// The commands conversation workers take from `conversation.commands` (the AMQP `type` property).
public enum ConversationCommand: String, Sendable, CaseIterable {
    /// Open the conversation (its first events, a sandbox): `ConversationStart`.
    case start
    /// A user message: `UserMessage`. Starts a step chain when none runs.
    case message
    /// `ConversationTarget`: the agent stops after the action in progress; `resume` continues it.
    case pause
    case resume
    /// `ConversationTarget`: the agent stops and the sandbox is stopped; `start` wakes it again.
    case stop
    /// `ConversationTarget`: the agent stops, the sandbox is destroyed and the conversation removed.
    case delete
    /// One step of the agent loop: `StepCommand` (DESIGN §4).
    case step
    /// From runtime workers: `SandboxReady`.
    case sandboxReady = "sandbox_ready"
    /// From runtime workers: `SandboxFailed`.
    case sandboxFailed = "sandbox_failed"
}

/// `step`: step number `step` of the conversation's chain.
public struct StepCommand: Codable, Sendable, Equatable {
    public var conversationID: UUID
    public var step: Int

    public init(conversationID: UUID, step: Int) {
        self.conversationID = conversationID
        self.step = step
    }

    /// The message id of this step: the same for every publish of it, so copies are recognised.
    public var messageID: String { "step:\(conversationID.uuidString.lowercased()):\(step)" }

    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
        case step
    }
}

/// `start`: open a conversation whose row exists. Idempotent: a started conversation only wakes its sandbox.
public struct ConversationStart: Codable, Sendable, Equatable {
    public var conversationID: UUID
    /// The first user message, if any (written as the conversation's first `message` event).
    public var initialUserMessage: String?
    public var imageURLs: [String]?
    /// An OpenHands trajectory (a JSON array of events) whose agent actions are replayed instead of asking a model.
    public var replayJSON: JSONValue?
    /// Extra instructions appended to the system prompt.
    public var conversationInstructions: String?

    public init(
        conversationID: UUID,
        initialUserMessage: String? = nil,
        imageURLs: [String]? = nil,
        replayJSON: JSONValue? = nil,
        conversationInstructions: String? = nil
    ) {
        self.conversationID = conversationID
        self.initialUserMessage = initialUserMessage
        self.imageURLs = imageURLs
        self.replayJSON = replayJSON
        self.conversationInstructions = conversationInstructions
    }

    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
        case initialUserMessage = "initial_user_msg"
        case imageURLs = "image_urls"
        case replayJSON = "replay_json"
        case conversationInstructions = "conversation_instructions"
    }
}

/// `message`: a user message for the conversation.
public struct UserMessage: Codable, Sendable, Equatable {
    public var conversationID: UUID
    public var content: String
    public var imageURLs: [String]?

    public init(conversationID: UUID, content: String, imageURLs: [String]? = nil) {
        self.conversationID = conversationID
        self.content = content
        self.imageURLs = imageURLs
    }

    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
        case content
        case imageURLs = "image_urls"
    }
}

/// `pause`, `resume`, `stop`, `delete`: the conversation they act on.
public struct ConversationTarget: Codable, Sendable, Equatable {
    public var conversationID: UUID

    public init(conversationID: UUID) {
        self.conversationID = conversationID
    }

    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
    }
}
