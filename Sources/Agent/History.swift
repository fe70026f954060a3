import DeckhandCore
import Foundation
import LLM

/// Rebuilds the model's conversation from stored events (DESIGN §4: events are the source of truth).
///
/// - The `system` event becomes the system message, user messages user messages.
/// - The actions one model response produced (one step) become one assistant message with their tool
///   calls, followed by one tool message per call with its observation; a user message that arrived during
///   that step comes after them. A call without an observation (a `finish`, an interrupted run) gets a
///   short tool message, so every call is answered.
/// - An observation longer than `observationMaxChars` is cut in the middle.
/// - The latest `condensation` event hides the events it summarised and puts its summary in their place.
public struct HistoryBuilder: Sendable {
    public var observationMaxChars: Int

    public init(observationMaxChars: Int) {
        self.observationMaxChars = observationMaxChars
    }

    /// One model response's share of the history, collected until its step ends.
    struct Group {
        var step: Int?
        var content: String?
        var calls: [ToolCall] = []
        var results: [String: String] = [:]
        var deferred: [ChatMessage] = []

        mutating func addThought(_ thought: String) {
            guard !thought.isEmpty else { return }
            content = content.map { $0 + "\n" + thought } ?? thought
        }
    }

    public func messages(from events: [StoredEvent]) -> [ChatMessage] {
        var output: [ChatMessage] = []
        var group: Group?

        func flush() {
            guard let open = group else { return }
            if !open.calls.isEmpty || open.content != nil {
                output.append(.assistant(open.content, toolCalls: open.calls))
                for call in open.calls {
                    output.append(.tool(open.results[call.id] ?? Self.missingResult(call), callID: call.id))
                }
            }
            output += open.deferred
            group = nil
        }

        for stored in CondensedView.visible(events) {
            let event = stored.event
            if let summary = stored.summary {
                flush()
                output.append(.user("Summary of the earlier part of this conversation:\n\(summary)"))
                continue
            }
            if let metadata = event.toolCallMetadata, event.source == .agent, event.action != nil {
                if group == nil || group?.step != stored.step {
                    flush()
                    group = Group(step: stored.step)
                }
                group?.addThought(event.args["thought"]?.stringValue ?? "")
                group?.calls.append(
                    ToolCall(id: metadata.toolCallID, name: metadata.functionName, arguments: Self.arguments(of: event))
                )
                continue
            }
            if let metadata = event.toolCallMetadata, event.observation != nil {
                if event.extras["error_id"]?.stringValue == ResponseParser.badActionErrorID {
                    // A call that could not be run: it has no action event, so the call is rebuilt here.
                    if group == nil || group?.step != stored.step {
                        flush()
                        group = Group(step: stored.step)
                    }
                    // From the response kept in the metadata; events stored before it was kept had the call's
                    // arguments and thought in their extras.
                    let thought = metadata.isFirstCall ? metadata.responseText : nil
                    group?.addThought(thought ?? event.extras["thought"]?.stringValue ?? "")
                    group?.calls.append(
                        ToolCall(
                            id: metadata.toolCallID,
                            name: metadata.functionName,
                            arguments: metadata.arguments ?? event.extras["arguments"]?.stringValue ?? ""
                        )
                    )
                }
                if group != nil {
                    group?.results[metadata.toolCallID] = render(observation: event)
                    continue
                }
                output.append(.user(render(observation: event)))
                continue
            }
            let message: ChatMessage?
            switch (event.source, event.action, event.observation) {
            case (_, "system", _):
                message = .system(event.args["content"]?.stringValue ?? event.message)
            case (.user, "message", _):
                let images =
                    (event.args["image_urls"].flatMap { value -> [String]? in
                        if case .array(let items) = value { return items.compactMap(\.stringValue) }
                        return nil
                    }) ?? []
                message = .user(event.args["content"]?.stringValue ?? event.message, imageURLs: images)
            case (.agent, "message", _):
                message = .assistant(event.args["content"]?.stringValue ?? event.message)
            case (_, _, "error"):
                message = .user(render(observation: event))
            default:
                message = nil
            }
            guard let message else { continue }
            if group != nil, event.source == .user {
                group?.deferred.append(message)
            } else {
                flush()
                output.append(message)
            }
        }
        flush()
        return output
    }

    /// The arguments a tool call had, rebuilt from its action.
    static func arguments(of action: Event) -> String {
        var arguments: JSONValue = [:]
        switch (action.toolCallMetadata?.functionName, action.action) {
        case (CodeActTools.executeBash, _):
            arguments["command"] = action.args["command"] ?? ""
            if action.args["is_input"]?.boolValue == true { arguments["is_input"] = "true" }
            if let timeout = action.timeout { arguments["timeout"] = .number(timeout) }
        case (CodeActTools.strReplaceEditor, "read"):
            arguments["command"] = "view"
            arguments["path"] = action.args["path"] ?? ""
            if let range = action.args["view_range"], !range.isNull { arguments["view_range"] = range }
        case (CodeActTools.strReplaceEditor, _):
            for key in ["command", "path", "file_text", "old_str", "new_str", "insert_line"] {
                if let value = action.args[key], !value.isNull { arguments[key] = value }
            }
        case (CodeActTools.think, _):
            arguments["thought"] = action.args["thought"] ?? ""
        case (CodeActTools.finish, _):
            arguments["message"] = action.args["final_thought"] ?? ""
        default:
            arguments = action.args
        }
        return arguments.serialized
    }

    static func missingResult(_ call: ToolCall) -> String {
        call.name == CodeActTools.finish
            ? "The task was marked as finished." : "No result: the action did not run to the end."
    }

    /// An observation as the model reads it.
    func render(observation event: Event) -> String {
        var text = event.content
        switch event.observation {
        case "run":
            let metadata = event.extras["metadata"] ?? [:]
            if let directory = metadata["working_dir"]?.stringValue, !directory.isEmpty {
                text += "\n[Current working directory: \(directory)]"
            }
            if let code = metadata["exit_code"]?.intValue, code != -1 {
                text += "\n[Command finished with exit code \(code)]"
            }
        case "error":
            if !text.hasPrefix("Error") { text = "Error: " + text }
        default:
            break
        }
        return Self.truncate(text, limit: observationMaxChars)
    }

    /// `text` cut in the middle to at most about `limit` characters, saying how much was left out.
    public static func truncate(_ text: String, limit: Int) -> String {
        guard text.count > limit else { return text }
        let half = limit / 2
        let omitted = text.count - 2 * half
        return String(text.prefix(half)) + "\n[… \(omitted) characters cut from the middle …]\n"
            + String(text.suffix(half))
    }
}
