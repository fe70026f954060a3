import DeckhandCore
import Foundation
import HTTPClient

/// Runs the actions of `/execute_action` and shapes their observations as OpenHands' V0 events.
struct ActionExecutor: Sendable {
    let shell: BashSession
    let files: FileTools
    let browser: Browser

    /// An HTTP answer: a status and a JSON body.
    struct Answer: Sendable {
        var status: Int
        var body: JSONValue
    }

    func execute(body: [UInt8]) async -> Answer {
        let request: JSONValue
        do {
            request = try JSONDecoder().decode(JSONValue.self, from: Data(body))
        } catch {
            return Answer(status: 400, body: ["detail": .string("the body is not valid JSON: \(describe(error))")])
        }
        let action: SandboxAction
        do {
            action = try SandboxAction(request: request)
        } catch {
            return Answer(status: 400, body: ["detail": .string(error.detail)])
        }
        return Answer(status: 200, body: await run(action))
    }

    func run(_ action: SandboxAction) async -> JSONValue {
        do {
            switch action {
            case .run(let command, let isInput, let blocking, let hardTimeout, let hidden):
                let outcome = try await shell.execute(
                    ShellRequest(command: command, isInput: isInput, hardTimeout: hardTimeout, blocking: blocking)
                )
                // Relative paths of later file actions resolve against the shell's directory, as in OpenHands.
                await files.setWorkingDirectory(outcome.workingDirectory)
                return Self.runObservation(command: command, hidden: hidden, outcome: outcome)
            case .read(let path, let start, let end, let viewRange, let implSource):
                let content =
                    implSource == "oh_aci"
                    ? try await files.view(path: path, viewRange: viewRange)
                    : try await files.read(path: path, start: start, end: end)
                return [
                    "observation": "read", "content": .string(content), "message": .string("I read the file \(path)."),
                    "extras": ["path": .string(path), "impl_source": .string(implSource)],
                ]
            case .write(let path, let content, let start, let end):
                try await files.write(path: path, content: content, start: start, end: end)
                return [
                    "observation": "write", "content": "", "message": .string("I wrote to the file \(path)."),
                    // OpenHands' FileWriteObservation: `content` is the top-level one only.
                    "extras": ["path": .string(path)],
                ]
            case .edit(let path, "view", _, _, _, _):
                let content = try await files.view(path: path, viewRange: nil)
                return [
                    "observation": "read", "content": .string(content), "message": .string("I read the file \(path)."),
                    "extras": ["path": .string(path), "impl_source": "oh_aci"],
                ]
            case .edit(let path, let command, let fileText, let oldStr, let newStr, let insertLine):
                let outcome = try await files.edit(
                    try Self.editCommand(
                        path: path,
                        command: command,
                        fileText: fileText,
                        oldStr: oldStr,
                        newStr: newStr,
                        insertLine: insertLine
                    )
                )
                return [
                    "observation": "edit", "content": .string(outcome.message),
                    "message": .string("I edited the file \(outcome.path)."),
                    "extras": [
                        "path": .string(outcome.path), "prev_exist": .bool(outcome.prevExist),
                        "old_content": JSONValue(outcome.oldContent),
                        "new_content": JSONValue(outcome.newContent),
                        "impl_source": "oh_aci", "diff": .string(outcome.diff),
                    ],
                ]
            case .browse(let url):
                return await browser.browse(url)
            }
        } catch let error as DeckhandError {
            return Self.errorObservation(error.message)
        } catch {
            return Self.errorObservation("\(error)")
        }
    }

    static func editCommand(
        path: String,
        command: String,
        fileText: String?,
        oldStr: String?,
        newStr: String?,
        insertLine: Int?
    ) throws(DeckhandError) -> EditCommand {
        func missing(_ name: String) -> DeckhandError {
            DeckhandError(.sandboxInvalidArguments, "Parameter `\(name)` is required for command: \(command).")
        }
        switch command {
        case "create":
            guard let fileText else { throw missing("file_text") }
            return .create(path: path, fileText: fileText)
        case "str_replace":
            guard let oldStr else { throw missing("old_str") }
            return .strReplace(path: path, oldStr: oldStr, newStr: newStr ?? "")
        case "insert":
            guard let insertLine else { throw missing("insert_line") }
            guard let newStr else { throw missing("new_str") }
            return .insert(path: path, insertLine: insertLine, newStr: newStr)
        case "undo_edit":
            return .undoEdit(path: path)
        default:
            throw DeckhandError(
                .sandboxInvalidArguments,
                "Unrecognized command \(command). The allowed commands for the str_replace_editor tool are: view, create, str_replace, insert, undo_edit."
            )
        }
    }

    static func runObservation(command: String, hidden: Bool, outcome: ShellOutcome) -> JSONValue {
        let metadata: JSONValue = [
            "exit_code": .number(Double(outcome.exitCode)),
            "pid": .number(Double(outcome.pid)),
            "username": .string(outcome.username),
            "hostname": .string(outcome.hostname),
            "working_dir": .string(outcome.workingDirectory),
            "py_interpreter_path": JSONValue(outcome.pythonInterpreterPath),
            "prefix": .string(outcome.prefix),
            "suffix": .string(outcome.suffix),
        ]
        return [
            "observation": "run",
            "content": .string(outcome.output),
            "message": .string("Command `\(command)` executed with exit code \(outcome.exitCode)."),
            "success": .bool(outcome.exitCode == 0),
            "extras": ["command": .string(command), "hidden": .bool(hidden), "metadata": metadata],
        ]
    }

    static func errorObservation(_ message: String) -> JSONValue {
        ["observation": "error", "content": .string(message), "message": .string(message), "extras": ["error_id": ""]]
    }
}

private func describe(_ error: any Error) -> String {
    if let decoding = error as? DecodingError, case .dataCorrupted(let context) = decoding {
        return context.underlyingError.map { "\($0)" } ?? context.debugDescription
    }
    return "\(error)"
}

extension DeckhandError.Code {
    /// An action's arguments cannot be used (an error observation the model reads).
    static let sandboxInvalidArguments: Self = "SANDBOX$INVALID_ARGUMENTS"
}
