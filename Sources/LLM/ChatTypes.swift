import DeckhandCore

/// One message of an OpenAI Chat Completions conversation.
public struct ChatMessage: Sendable, Equatable, Codable {
    public enum Role: String, Sendable, Codable {
        case system, user, assistant, tool
    }

    public var role: Role
    /// The text; nil for an assistant message that only calls tools.
    public var content: String?
    /// Images sent with a user message (sent as content parts).
    public var imageURLs: [String]
    /// The tools an assistant message calls.
    public var toolCalls: [ToolCall]
    /// The call a `tool` message answers.
    public var toolCallID: String?

    public init(
        role: Role,
        content: String?,
        imageURLs: [String] = [],
        toolCalls: [ToolCall] = [],
        toolCallID: String? = nil
    ) {
        self.role = role
        self.content = content
        self.imageURLs = imageURLs
        self.toolCalls = toolCalls
        self.toolCallID = toolCallID
    }

    public static func system(_ text: String) -> ChatMessage { ChatMessage(role: .system, content: text) }
    public static func user(_ text: String, imageURLs: [String] = []) -> ChatMessage {
        ChatMessage(role: .user, content: text, imageURLs: imageURLs)
    }
    public static func assistant(_ text: String?, toolCalls: [ToolCall] = []) -> ChatMessage {
        ChatMessage(role: .assistant, content: text, toolCalls: toolCalls)
    }
    public static func tool(_ text: String, callID: String) -> ChatMessage {
        ChatMessage(role: .tool, content: text, toolCallID: callID)
    }

    enum CodingKeys: String, CodingKey {
        case role, content
        case toolCalls = "tool_calls"
        case toolCallID = "tool_call_id"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        role = try container.decode(Role.self, forKey: .role)
        toolCalls = try container.decodeIfPresent([ToolCall].self, forKey: .toolCalls) ?? []
        toolCallID = try container.decodeIfPresent(String.self, forKey: .toolCallID)
        imageURLs = []
        if let text = try? container.decodeIfPresent(String.self, forKey: .content) {
            content = text
        } else if let parts = try? container.decodeIfPresent([JSONValue].self, forKey: .content) {
            let texts = parts.compactMap { $0["type"]?.stringValue == "text" ? $0["text"]?.stringValue : nil }
            content = texts.joined(separator: "\n")
            imageURLs = parts.compactMap { $0["image_url"]?["url"]?.stringValue }
        } else {
            content = nil
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(role, forKey: .role)
        if imageURLs.isEmpty {
            // OpenAI wants `content` present (null) on an assistant message that only calls tools.
            try container.encode(content, forKey: .content)
        } else {
            var parts: [JSONValue] = [["type": "text", "text": .string(content ?? "")]]
            parts += imageURLs.map { ["type": "image_url", "image_url": ["url": .string($0)]] }
            try container.encode(parts, forKey: .content)
        }
        if !toolCalls.isEmpty { try container.encode(toolCalls, forKey: .toolCalls) }
        try container.encodeIfPresent(toolCallID, forKey: .toolCallID)
    }
}

/// A function call the model asked for; `arguments` is JSON text as the model wrote it (maybe invalid).
public struct ToolCall: Sendable, Equatable, Codable {
    public var id: String
    public var name: String
    public var arguments: String

    public init(id: String, name: String, arguments: String) {
        self.id = id
        self.name = name
        self.arguments = arguments
    }

    enum CodingKeys: String, CodingKey {
        case id, type, function
    }

    struct Function: Codable {
        var name: String
        var arguments: String?
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decodeIfPresent(String.self, forKey: .id) ?? ""
        let function = try container.decode(Function.self, forKey: .function)
        name = function.name
        arguments = function.arguments ?? ""
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode("function", forKey: .type)
        try container.encode(Function(name: name, arguments: arguments), forKey: .function)
    }
}

/// A function the model may call: a name, a description and a JSON Schema of its parameters.
public struct ToolDefinition: Sendable, Equatable, Codable {
    public var name: String
    public var description: String
    public var parameters: JSONValue

    public init(name: String, description: String, parameters: JSONValue) {
        self.name = name
        self.description = description
        self.parameters = parameters
    }

    /// The OpenAI wire form, `{type: "function", function: {name, description, parameters}}`.
    public var json: JSONValue {
        [
            "type": "function",
            "function": ["name": .string(name), "description": .string(description), "parameters": parameters],
        ]
    }

    enum CodingKeys: String, CodingKey {
        case type, function
    }

    public init(from decoder: any Decoder) throws {
        let json = try JSONValue(from: decoder)
        let function = json["function"] ?? json
        name = function["name"]?.stringValue ?? ""
        description = function["description"]?.stringValue ?? ""
        parameters = function["parameters"] ?? [:]
    }

    public func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }
}

/// A Chat Completions request.
public struct ChatRequest: Sendable, Equatable, Encodable {
    public var model: String
    public var messages: [ChatMessage]
    public var tools: [ToolDefinition]
    public var temperature: Double?

    public init(model: String, messages: [ChatMessage], tools: [ToolDefinition] = [], temperature: Double? = nil) {
        self.model = model
        self.messages = messages
        self.tools = tools
        self.temperature = temperature
    }

    enum CodingKeys: String, CodingKey {
        case model, messages, tools, temperature
        case toolChoice = "tool_choice"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(model, forKey: .model)
        try container.encode(messages, forKey: .messages)
        if !tools.isEmpty {
            try container.encode(tools, forKey: .tools)
            try container.encode("auto", forKey: .toolChoice)
        }
        try container.encodeIfPresent(temperature, forKey: .temperature)
    }
}

/// Token counts of one completion.
public struct TokenUsage: Sendable, Equatable, Codable {
    public var promptTokens: Int
    public var completionTokens: Int
    /// Prompt tokens served from the provider's cache.
    public var cachedTokens: Int

    public init(promptTokens: Int = 0, completionTokens: Int = 0, cachedTokens: Int = 0) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
    }

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case details = "prompt_tokens_details"
    }

    struct Details: Codable {
        var cachedTokens: Int?
        enum CodingKeys: String, CodingKey { case cachedTokens = "cached_tokens" }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        promptTokens = try container.decodeIfPresent(Int.self, forKey: .promptTokens) ?? 0
        completionTokens = try container.decodeIfPresent(Int.self, forKey: .completionTokens) ?? 0
        cachedTokens = (try? container.decodeIfPresent(Details.self, forKey: .details))?.cachedTokens ?? 0
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(promptTokens, forKey: .promptTokens)
        try container.encode(completionTokens, forKey: .completionTokens)
        if cachedTokens > 0 { try container.encode(Details(cachedTokens: cachedTokens), forKey: .details) }
    }
}

/// What the model answered, reduced to what the agent uses: the first choice's text and tool calls.
public struct ChatResponse: Sendable, Equatable, Codable {
    public var id: String
    public var model: String
    public var content: String?
    public var toolCalls: [ToolCall]
    public var finishReason: String?
    public var usage: TokenUsage

    public init(
        id: String,
        model: String,
        content: String?,
        toolCalls: [ToolCall] = [],
        finishReason: String? = nil,
        usage: TokenUsage = TokenUsage()
    ) {
        self.id = id
        self.model = model
        self.content = content
        self.toolCalls = toolCalls
        self.finishReason = finishReason
        self.usage = usage
    }

    enum CodingKeys: String, CodingKey {
        case id, model, choices, usage
    }

    struct Choice: Codable {
        var message: ChatMessage
        var finishReason: String?
        enum CodingKeys: String, CodingKey {
            case message
            case finishReason = "finish_reason"
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decodeIfPresent(String.self, forKey: .id) ?? ""
        model = try container.decodeIfPresent(String.self, forKey: .model) ?? ""
        let choices = try container.decode([Choice].self, forKey: .choices)
        guard let first = choices.first else {
            throw DecodingError.dataCorruptedError(
                forKey: .choices,
                in: container,
                debugDescription: "the response has no choices"
            )
        }
        content = first.message.content
        toolCalls = first.message.toolCalls
        finishReason = first.finishReason
        usage = try container.decodeIfPresent(TokenUsage.self, forKey: .usage) ?? TokenUsage()
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(model, forKey: .model)
        let message = ChatMessage(role: .assistant, content: content, toolCalls: toolCalls)
        try container.encode([Choice(message: message, finishReason: finishReason)], forKey: .choices)
        try container.encode(usage, forKey: .usage)
    }
}
