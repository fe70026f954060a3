import Foundation

/// One OpenHands V0 event (PROTOCOL.md §B): an action or an observation, with the fields Deckhand reads
/// and writes. ``json`` is the wire form stored in `events.payload` and published on `deckhand.events`.
public struct Event: Sendable, Equatable {
    /// Who caused the event.
    public enum Source: String, Sendable, Codable {
        case agent, user, environment
    }

    /// `action` + `args`, or `observation` + `content` + `extras`.
    public enum Kind: Sendable, Equatable {
        case action(String)
        case observation(String)
    }

    /// Sequential from 0 per conversation; nil until the event is stored.
    public var id: Int?
    public var timestamp: Date
    public var source: Source
    public var message: String
    /// The id of the action an observation answers.
    public var cause: Int?
    public var kind: Kind
    /// An action's arguments (an object).
    public var args: JSONValue
    /// An observation's text.
    public var content: String
    /// An observation's extras (an object).
    public var extras: JSONValue
    /// An observation's `success`, where it has one.
    public var success: Bool?
    /// A `run` action's hard timeout in seconds.
    public var timeout: Double?
    /// Which tool call of which model response the action (or its observation) belongs to.
    public var toolCallMetadata: ToolCallMetadata?
    /// The conversation's accumulated cost and tokens when the action was decided.
    public var llmMetrics: LLMMetrics?

    public init(
        id: Int? = nil,
        timestamp: Date = Date(),
        source: Source,
        message: String = "",
        cause: Int? = nil,
        kind: Kind,
        args: JSONValue = [:],
        content: String = "",
        extras: JSONValue = [:],
        success: Bool? = nil,
        timeout: Double? = nil,
        toolCallMetadata: ToolCallMetadata? = nil,
        llmMetrics: LLMMetrics? = nil
    ) {
        self.id = id
        self.timestamp = timestamp
        self.source = source
        self.message = message
        self.cause = cause
        self.kind = kind
        self.args = args
        self.content = content
        self.extras = extras
        self.success = success
        self.timeout = timeout
        self.toolCallMetadata = toolCallMetadata
        self.llmMetrics = llmMetrics
    }

    /// The action type, if this is an action.
    public var action: String? {
        if case .action(let name) = kind { return name }
        return nil
    }

    /// The observation type, if this is an observation.
    public var observation: String? {
        if case .observation(let name) = kind { return name }
        return nil
    }

    /// `run`, `message`, `agent_state_changed`, …: the action or observation type (`events.kind`).
    public var typeName: String {
        switch kind {
        case .action(let name), .observation(let name): return name
        }
    }
}

/// OpenHands' `tool_call_metadata`: which call of which model response an action (or its observation)
/// belongs to. `model_response` is the whole response in the Chat Completions shape, as OpenHands keeps it
/// (its client rebuilds the assistant's message from it, and its parser requires it).
public struct ToolCallMetadata: Sendable, Equatable, Codable {
    public var functionName: String
    public var toolCallID: String
    public var totalCallsInResponse: Int
    public var modelResponse: JSONValue

    /// What an event stored before responses were kept carries: OpenHands reads it as an empty response.
    public static let emptyResponse: JSONValue = [:]

    public init(
        functionName: String,
        toolCallID: String,
        totalCallsInResponse: Int,
        modelResponse: JSONValue = ToolCallMetadata.emptyResponse
    ) {
        self.functionName = functionName
        self.toolCallID = toolCallID
        self.totalCallsInResponse = totalCallsInResponse
        self.modelResponse = modelResponse
    }

    enum CodingKeys: String, CodingKey {
        case functionName = "function_name"
        case toolCallID = "tool_call_id"
        case totalCallsInResponse = "total_calls_in_response"
        case modelResponse = "model_response"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        functionName = try container.decode(String.self, forKey: .functionName)
        toolCallID = try container.decode(String.self, forKey: .toolCallID)
        totalCallsInResponse = try container.decodeIfPresent(Int.self, forKey: .totalCallsInResponse) ?? 1
        modelResponse = try container.decodeIfPresent(JSONValue.self, forKey: .modelResponse) ?? Self.emptyResponse
    }

    /// The call's arguments as the model wrote them, from the response (nil when it was not kept).
    public var arguments: String? {
        call?["function"]?["arguments"]?.stringValue
    }

    /// Whether this is the response's first call (the one the response's text goes with).
    public var isFirstCall: Bool {
        guard case .array(let calls)? = message?["tool_calls"] else { return true }
        return calls.first?["id"]?.stringValue == toolCallID
    }

    /// The text the model wrote beside its calls.
    public var responseText: String? { message?["content"]?.stringValue }

    private var message: JSONValue? {
        guard case .array(let choices)? = modelResponse["choices"] else { return nil }
        return choices.first?["message"]
    }

    private var call: JSONValue? {
        guard case .array(let calls)? = message?["tool_calls"] else { return nil }
        return calls.first { $0["id"]?.stringValue == toolCallID }
    }
}

/// OpenHands' `llm_metrics`: what the conversation's model use has cost so far.
public struct LLMMetrics: Sendable, Equatable, Codable {
    public var accumulatedCost: Double
    public var promptTokens: Int
    public var completionTokens: Int
    public var cacheReadTokens: Int
    public var cacheWriteTokens: Int

    public init(
        accumulatedCost: Double = 0,
        promptTokens: Int = 0,
        completionTokens: Int = 0,
        cacheReadTokens: Int = 0,
        cacheWriteTokens: Int = 0
    ) {
        self.accumulatedCost = accumulatedCost
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cacheReadTokens = cacheReadTokens
        self.cacheWriteTokens = cacheWriteTokens
    }

    /// The wire form: `{accumulated_cost, accumulated_token_usage: {prompt_tokens, completion_tokens, …}}`.
    public var json: JSONValue {
        [
            "accumulated_cost": .number(accumulatedCost),
            "accumulated_token_usage": [
                "prompt_tokens": .number(Double(promptTokens)),
                "completion_tokens": .number(Double(completionTokens)),
                "cache_read_tokens": .number(Double(cacheReadTokens)),
                "cache_write_tokens": .number(Double(cacheWriteTokens)),
            ],
        ]
    }

    public init(json: JSONValue) {
        let usage = json["accumulated_token_usage"] ?? [:]
        self.init(
            accumulatedCost: json["accumulated_cost"]?.doubleValue ?? 0,
            promptTokens: usage["prompt_tokens"]?.intValue ?? 0,
            completionTokens: usage["completion_tokens"]?.intValue ?? 0,
            cacheReadTokens: usage["cache_read_tokens"]?.intValue ?? 0,
            cacheWriteTokens: usage["cache_write_tokens"]?.intValue ?? 0
        )
    }

    public func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }
    public init(from decoder: any Decoder) throws { self.init(json: try JSONValue(from: decoder)) }
}

// MARK: - Wire form

extension Event {
    /// OpenHands' timestamp form: ISO 8601 in UTC with microseconds and no zone (`2026-01-01T09:00:01.123456`).
    public static func formatTimestamp(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970
        let whole = seconds.rounded(.down)
        var micros = Int(((seconds - whole) * 1_000_000).rounded())
        var wholeDate = Date(timeIntervalSince1970: whole)
        if micros >= 1_000_000 {
            micros -= 1_000_000
            wholeDate += 1
        }
        let base = wholeDate.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false))
        let trimmed = base.hasSuffix("Z") ? String(base.dropLast()) : base
        let fraction = String(micros)
        return "\(trimmed).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
    }

    /// Parses ``formatTimestamp(_:)``'s form (and ISO 8601 with a zone).
    public static func parseTimestamp(_ text: String) -> Date? {
        let withZone = text.hasSuffix("Z") || text.contains("+") ? text : text + "Z"
        if let date = try? Date(
            withZone,
            strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true)
        ) {
            return date
        }
        return try? Date(withZone, strategy: .iso8601)
    }

    /// The OpenHands V0 JSON of this event.
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "timestamp": .string(Self.formatTimestamp(timestamp)),
            "source": .string(source.rawValue),
            "message": .string(message),
        ]
        if let id { object["id"] = .number(Double(id)) }
        if let cause { object["cause"] = .number(Double(cause)) }
        switch kind {
        case .action(let name):
            object["action"] = .string(name)
            object["args"] = args
            if let timeout { object["timeout"] = .number(timeout) }
        case .observation(let name):
            object["observation"] = .string(name)
            object["content"] = .string(content)
            object["extras"] = extras
            if let success { object["success"] = .bool(success) }
        }
        if let toolCallMetadata {
            object["tool_call_metadata"] = [
                "function_name": .string(toolCallMetadata.functionName),
                "tool_call_id": .string(toolCallMetadata.toolCallID),
                "total_calls_in_response": .number(Double(toolCallMetadata.totalCallsInResponse)),
                "model_response": toolCallMetadata.modelResponse,
            ]
        }
        if let llmMetrics { object["llm_metrics"] = llmMetrics.json }
        return .object(object)
    }

    /// Reads an event from its OpenHands V0 JSON (stored events, replayed trajectories).
    public init(json: JSONValue) throws(DeckhandError) {
        guard case .object = json else {
            throw DeckhandError(.protocolViolation, "an event must be a JSON object")
        }
        let kind: Kind
        if let action = json["action"]?.stringValue {
            kind = .action(action)
        } else if let observation = json["observation"]?.stringValue {
            kind = .observation(observation)
        } else {
            throw DeckhandError(.protocolViolation, "an event needs an `action` or an `observation` type")
        }
        let source = json["source"]?.stringValue.flatMap(Source.init(rawValue:)) ?? .environment
        var metadata: ToolCallMetadata?
        if let raw = json["tool_call_metadata"], let name = raw["function_name"]?.stringValue,
            let callID = raw["tool_call_id"]?.stringValue
        {
            metadata = ToolCallMetadata(
                functionName: name,
                toolCallID: callID,
                totalCallsInResponse: raw["total_calls_in_response"]?.intValue ?? 1,
                modelResponse: raw["model_response"].flatMap { $0.isNull ? nil : $0 } ?? ToolCallMetadata.emptyResponse
            )
        }
        self.init(
            id: json["id"]?.intValue,
            timestamp: json["timestamp"]?.stringValue.flatMap(Self.parseTimestamp) ?? Date(),
            source: source,
            message: json["message"]?.stringValue ?? "",
            cause: json["cause"]?.intValue,
            kind: kind,
            args: json["args"] ?? [:],
            content: json["content"]?.stringValue ?? "",
            extras: json["extras"] ?? [:],
            success: json["success"]?.boolValue,
            timeout: json["timeout"]?.doubleValue,
            toolCallMetadata: metadata,
            llmMetrics: json["llm_metrics"].flatMap { $0.isNull ? nil : LLMMetrics(json: $0) }
        )
    }
}

/// An event as stored: the event (with its id) and the step that wrote it (nil for events from outside a
/// step, such as user messages).
public struct StoredEvent: Sendable, Equatable {
    public var event: Event
    public var step: Int?

    public init(event: Event, step: Int?) {
        self.event = event
        self.step = step
    }

    public var id: Int { event.id ?? -1 }
}
