import DeckhandCore

/// An action `/execute_action` can run, decoded from OpenHands' V0 action JSON
/// (`{"action": {"action": "run", "args": {…}, "timeout": 120}}`).
enum SandboxAction: Equatable {
    case run(command: String, isInput: Bool, blocking: Bool, hardTimeout: Duration?, hidden: Bool)
    case read(path: String, start: Int, end: Int, viewRange: [Int]?, implSource: String)
    case write(path: String, content: String, start: Int, end: Int)
    /// `str_replace_editor`: `command` is create, str_replace, insert, undo_edit (or view).
    case edit(path: String, command: String, fileText: String?, oldStr: String?, newStr: String?, insertLine: Int?)
    case browse(url: String)

    /// A request the server cannot run: HTTP 400 with `detail`.
    struct Invalid: Error, Equatable {
        var detail: String
    }

    /// Decodes the request body of `/execute_action`.
    init(request: JSONValue) throws(Invalid) {
        guard case .object = request, let action = request["action"], case .object = action else {
            throw Invalid(detail: "the body must be a JSON object with an `action` object")
        }
        guard let type = action["action"]?.stringValue else {
            throw Invalid(detail: "`action.action` (the action type) is missing")
        }
        let args = action["args"] ?? [:]
        func string(_ key: String) -> String? { args[key]?.stringValue }
        func int(_ key: String, default value: Int) throws(Invalid) -> Int {
            guard let raw = args[key], !raw.isNull else { return value }
            guard let number = raw.intValue else { throw Invalid(detail: "`args.\(key)` must be an integer") }
            return number
        }
        func require(_ key: String) throws(Invalid) -> String {
            guard let value = string(key) else {
                throw Invalid(detail: "`args.\(key)` (a string) is required for `\(type)`")
            }
            return value
        }
        switch type {
        case "run":
            var hardTimeout: Duration?
            if let seconds = action["timeout"]?.doubleValue ?? args["timeout"]?.doubleValue, seconds > 0 {
                hardTimeout = .milliseconds(Int64(seconds * 1000))
            }
            self = .run(
                command: try require("command"),
                isInput: args["is_input"]?.boolValue ?? false,
                blocking: args["blocking"]?.boolValue ?? false,
                hardTimeout: hardTimeout,
                hidden: args["hidden"]?.boolValue ?? false
            )
        case "read":
            var viewRange: [Int]?
            if case .array(let values)? = args["view_range"] {
                viewRange = values.compactMap(\.intValue)
                guard viewRange?.count == values.count else {
                    throw Invalid(detail: "`args.view_range` must be two integers")
                }
            }
            self = .read(
                path: try require("path"),
                start: try int("start", default: 0),
                end: try int("end", default: -1),
                viewRange: viewRange,
                implSource: string("impl_source") ?? "default"
            )
        case "write":
            self = .write(
                path: try require("path"),
                content: string("content") ?? "",
                start: try int("start", default: 0),
                end: try int("end", default: -1)
            )
        case "edit":
            guard let command = string("command"), !command.isEmpty else {
                throw Invalid(detail: "`args.command` is required for `edit` (create, str_replace, insert, undo_edit)")
            }
            let insertLine = try int("insert_line", default: -1)
            self = .edit(
                path: try require("path"),
                command: command,
                fileText: string("file_text"),
                oldStr: string("old_str"),
                newStr: string("new_str"),
                insertLine: insertLine < 0 ? nil : insertLine
            )
        case "browse":
            self = .browse(url: try require("url"))
        default:
            throw Invalid(
                detail: "unknown action type `\(type)`: this sandbox runs run, read, write, edit and browse"
            )
        }
    }
}
