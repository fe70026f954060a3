import DeckhandCore
import LLM

/// The tools offered to the model (PROTOCOL.md §E): OpenHands' CodeAct names and parameters, so models
/// tuned on OpenHands trajectories (and replayed trajectories) call them the same way.
public enum CodeActTools {
    public static let executeBash = "execute_bash"
    public static let strReplaceEditor = "str_replace_editor"
    public static let think = "think"
    public static let finish = "finish"

    /// Every tool, in the order they are offered.
    public static let all: [ToolDefinition] = [bash, editor, thinkTool, finishTool]

    /// The tools as the `system` event records them.
    public static var json: JSONValue { .array(all.map(\.json)) }

    static let bash = ToolDefinition(
        name: executeBash,
        description: """
            Run a bash command in the sandbox's persistent shell (its working directory and environment \
            carry over between calls).
            * One command per call; chain several with `&&` or `;`.
            * A command that prints nothing new for a while returns early with exit code -1: call again \
            with an empty command to read more output, send input with `is_input` set to "true", or send \
            `C-c` to interrupt it.
            * Run servers and other long-lived programs in the background (`cmd > log 2>&1 &`).
            * Long output is cut in the middle; redirect it to a file and read parts of it.
            """,
        parameters: [
            "type": "object",
            "properties": [
                "command": [
                    "type": "string",
                    "description":
                        "The command. May be empty to read more output of a running command, or C-c, C-d, C-z to send those keys.",
                ],
                "is_input": [
                    "type": "string",
                    "enum": ["true", "false"],
                    "description": "\"true\" to send `command` as input to the running program instead of running it.",
                ],
                "timeout": [
                    "type": "number",
                    "description":
                        "A hard limit in seconds for this command; without it a command returns once it goes quiet.",
                ],
                "security_risk": [
                    "type": "string",
                    "enum": ["LOW", "MEDIUM", "HIGH"],
                    "description": "How risky the command is for the machine and its data.",
                ],
            ],
            "required": ["command"],
        ]
    )

    static let editor = ToolDefinition(
        name: strReplaceEditor,
        description: """
            View, create and edit files.
            * `view` shows a file with line numbers (or lists a directory two levels deep); `view_range` limits it.
            * `create` writes a new file with `file_text`; it fails when the file exists.
            * `str_replace` replaces `old_str`, which must occur exactly once, by `new_str`; include enough \
            surrounding lines to make it unique, and match whitespace exactly.
            * `insert` adds `new_str` after line `insert_line` (0 for the top).
            * `undo_edit` reverts the last edit of the file.
            Paths are absolute.
            """,
        parameters: [
            "type": "object",
            "properties": [
                "command": [
                    "type": "string",
                    "enum": ["view", "create", "str_replace", "insert", "undo_edit"],
                    "description": "What to do.",
                ],
                "path": ["type": "string", "description": "Absolute path of the file or directory."],
                "file_text": ["type": "string", "description": "The content of the file `create` writes."],
                "old_str": ["type": "string", "description": "The text `str_replace` replaces."],
                "new_str": [
                    "type": "string", "description": "The new text of `str_replace`, or the text `insert` adds.",
                ],
                "insert_line": ["type": "integer", "description": "The line after which `insert` adds `new_str`."],
                "view_range": [
                    "type": "array",
                    "items": ["type": "integer"],
                    "description": "First and last line `view` shows; -1 as the last means the end of the file.",
                ],
            ],
            "required": ["command", "path"],
        ]
    )

    static let thinkTool = ToolDefinition(
        name: think,
        description: """
            Think something through: the thought is logged and nothing else happens. Use it to plan, to weigh \
            options, or to reason about a result before acting.
            """,
        parameters: [
            "type": "object",
            "properties": ["thought": ["type": "string", "description": "The thought."]],
            "required": ["thought"],
        ]
    )

    static let finishTool = ToolDefinition(
        name: finish,
        description: """
            Say that the task is done (or cannot be done), with a summary of what was done and anything the \
            user should know. The conversation then waits for the user.
            """,
        parameters: [
            "type": "object",
            "properties": ["message": ["type": "string", "description": "The summary for the user."]],
            "required": ["message"],
        ]
    )
}
