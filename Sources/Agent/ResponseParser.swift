import DeckhandCore
import Foundation
import LLM

/// What the agent does with one model response: for each tool call, an action to record (and run), or an
/// `error` observation when the call cannot be run (unknown function, bad arguments). A response without a
/// tool call is one agent `message` that waits for the user.
public enum PlannedAction: Sendable, Equatable {
    case action(Event)
    case invalid(Event)

    public var event: Event {
        switch self {
        case .action(let event), .invalid(let event): return event
        }
    }
}

/// Turns a model response into planned actions (PROTOCOL.md §E).
public enum ResponseParser {
    /// `error_id` of the error observation of a call that cannot be run.
    public static let badActionErrorID = "AGENT_ERROR$BAD_ACTION"

    public static func plan(_ response: ChatResponse, metrics: LLMMetrics) -> [PlannedAction] {
        let text = response.content ?? ""
        guard !response.toolCalls.isEmpty else {
            var message = Event.agentMessage(text, waitForResponse: true)
            message.llmMetrics = metrics
            return [.action(message)]
        }
        var thoughtPending = text
        let modelResponse = Self.modelResponse(response)
        return response.toolCalls.map { call -> PlannedAction in
            let metadata = ToolCallMetadata(
                functionName: call.name,
                toolCallID: call.id,
                totalCallsInResponse: response.toolCalls.count,
                modelResponse: modelResponse
            )
            switch action(for: call) {
            case .success(var event):
                if !thoughtPending.isEmpty {
                    event.args["thought"] = .string(thoughtPending)
                    thoughtPending = ""
                }
                event.toolCallMetadata = metadata
                event.llmMetrics = metrics
                return .action(event)
            case .failure(let problem):
                let error = Event.errorObservation(
                    "\(problem.message) Check the tool's parameters and call it again.",
                    errorID: badActionErrorID,
                    toolCallMetadata: metadata
                )
                // OpenHands' ErrorObservation has no other field: the call this error answers (for the model's
                // next prompt) is read back from the response in the metadata.
                thoughtPending = ""
                return .invalid(error)
            }
        }
    }

    /// `response` in the Chat Completions shape, as OpenHands keeps it in `tool_call_metadata.model_response`.
    public static func modelResponse(_ response: ChatResponse) -> JSONValue {
        let calls: [JSONValue] = response.toolCalls.map { call in
            [
                "id": .string(call.id), "type": "function",
                "function": ["name": .string(call.name), "arguments": .string(call.arguments)],
            ]
        }
        return [
            "id": .string(response.id), "object": "chat.completion", "model": .string(response.model),
            "choices": [
                [
                    "index": 0, "finish_reason": JSONValue(response.finishReason),
                    "message": [
                        "role": "assistant", "content": JSONValue(response.content), "tool_calls": .array(calls),
                    ],
                ]
            ],
            "usage": [
                "prompt_tokens": .number(Double(response.usage.promptTokens)),
                "completion_tokens": .number(Double(response.usage.completionTokens)),
                "total_tokens": .number(Double(response.usage.promptTokens + response.usage.completionTokens)),
            ],
        ]
    }

    struct Problem: Error {
        var message: String
    }

    static func action(for call: ToolCall) -> Result<Event, Problem> {
        Result { () throws(Problem) -> Event in try makeAction(for: call) }
    }

    static func makeAction(for call: ToolCall) throws(Problem) -> Event {
        let arguments: JSONValue
        let trimmed = call.arguments.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty {
            arguments = [:]
        } else if let decoded = try? JSONValue(parsing: trimmed), case .object = decoded {
            arguments = decoded
        } else {
            throw Problem(
                message: "The arguments of `\(call.name)` are not a JSON object: \(call.arguments.prefix(200))."
            )
        }
        func string(_ key: String) -> String? { arguments[key]?.stringValue }
        func require(_ key: String) throws(Problem) -> String {
            guard let value = string(key) else {
                throw Problem(message: "`\(call.name)` needs the string parameter `\(key)`.")
            }
            return value
        }
        let risk: Int
        switch string("security_risk")?.uppercased() {
        case "LOW": risk = 0
        case "MEDIUM": risk = 1
        case "HIGH": risk = 2
        default: risk = -1
        }

        switch call.name {
        case CodeActTools.executeBash:
            let command = try require("command")
            let isInput = arguments["is_input"]?.boolValue ?? false
            var timeout: Double?
            if let raw = arguments["timeout"], !raw.isNull {
                guard let seconds = raw.doubleValue ?? raw.stringValue.flatMap(Double.init), seconds > 0 else {
                    throw Problem(message: "`timeout` of `execute_bash` must be a positive number of seconds.")
                }
                timeout = seconds
            }
            return Event(
                source: .agent,
                message: "Running command: \(command)",
                kind: .action("run"),
                args: [
                    "command": .string(command), "is_input": .bool(isInput), "thought": "",
                    "blocking": .bool(timeout != nil), "is_static": false, "cwd": nil, "hidden": false,
                    "confirmation_state": "confirmed", "security_risk": .number(Double(risk)),
                ],
                timeout: timeout
            )
        case CodeActTools.strReplaceEditor:
            let command = try require("command")
            let path = try require("path")
            guard path.hasPrefix("/") else {
                throw Problem(message: "`path` must be absolute; got `\(path)`.")
            }
            switch command {
            case "view":
                var range: JSONValue = nil
                if let raw = arguments["view_range"], !raw.isNull {
                    guard case .array(let values) = raw, values.count == 2, values.allSatisfy({ $0.intValue != nil })
                    else {
                        throw Problem(message: "`view_range` must be two integers, such as [1, 40].")
                    }
                    range = raw
                }
                return Event(
                    source: .agent,
                    message: "Reading file: \(path)",
                    kind: .action("read"),
                    args: [
                        "path": .string(path), "start": 0, "end": -1, "thought": "", "impl_source": "oh_aci",
                        "view_range": range, "security_risk": .number(Double(risk)),
                    ]
                )
            case "create", "str_replace", "insert", "undo_edit":
                var args: JSONValue = [
                    "path": .string(path), "command": .string(command), "thought": "", "impl_source": "oh_aci",
                    "file_text": nil, "old_str": nil, "new_str": nil, "insert_line": nil, "content": "", "start": 1,
                    "end": -1, "security_risk": .number(Double(risk)),
                ]
                switch command {
                case "create":
                    guard let text = string("file_text") else {
                        throw Problem(message: "`create` needs `file_text`.")
                    }
                    args["file_text"] = .string(text)
                case "str_replace":
                    guard let old = string("old_str") else {
                        throw Problem(message: "`str_replace` needs `old_str`.")
                    }
                    args["old_str"] = .string(old)
                    args["new_str"] = .string(string("new_str") ?? "")
                case "insert":
                    guard let line = arguments["insert_line"]?.intValue, let text = string("new_str") else {
                        throw Problem(message: "`insert` needs `insert_line` (an integer) and `new_str`.")
                    }
                    args["insert_line"] = .number(Double(line))
                    args["new_str"] = .string(text)
                default:
                    break
                }
                return Event(source: .agent, message: "Editing file: \(path)", kind: .action("edit"), args: args)
            default:
                throw Problem(
                    message:
                        "`command` of `str_replace_editor` must be view, create, str_replace, insert or undo_edit; got `\(command)`."
                )
            }
        case CodeActTools.think:
            let thought = string("thought") ?? ""
            return Event(source: .agent, message: thought, kind: .action("think"), args: ["thought": .string(thought)])
        case CodeActTools.finish:
            let message = string("message") ?? string("final_thought") ?? ""
            return Event(
                source: .agent,
                message: message,
                kind: .action("finish"),
                args: ["final_thought": .string(message), "outputs": [:], "thought": ""]
            )
        default:
            let names = CodeActTools.all.map(\.name).joined(separator: ", ")
            throw Problem(message: "There is no tool named `\(call.name)`; the tools are \(names).")
        }
    }

    /// The observation of an action that needs no sandbox (`think`), if it has one.
    public static func localObservation(for action: Event) -> Event? {
        guard action.action == "think" else { return nil }
        return Event(
            source: .agent,
            message: "Your thought has been logged.",
            cause: action.id,
            kind: .observation("think"),
            content: "Your thought has been logged.",
            extras: [:],
            toolCallMetadata: action.toolCallMetadata
        )
    }

    /// Whether the sandbox runs this action.
    public static func needsSandbox(_ action: Event) -> Bool {
        switch action.action {
        case "run", "read", "write", "edit", "browse": return true
        default: return false
        }
    }
}
