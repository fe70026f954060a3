import DeckhandCore

/// A `str_replace_editor` command that changes a file (`view` is ``FileTools/view(path:viewRange:)``).
public enum EditCommand: Sendable {
    /// Creates a new file holding `fileText`; fails if `path` exists.
    case create(path: String, fileText: String)
    /// Replaces the one occurrence of `oldStr` with `newStr` (which may be empty, deleting it).
    case strReplace(path: String, oldStr: String, newStr: String)
    /// Inserts `newStr` after line `insertLine` (0 inserts at the start).
    case insert(path: String, insertLine: Int, newStr: String)
    /// Restores the content the file had before its last edit.
    case undoEdit(path: String)
}

/// What an edit did: the model's message and the fields of the `edit` observation (PROTOCOL.md §B).
public struct EditOutcome: Sendable, Equatable {
    /// What the model reads: a confirmation and, for changes, a `cat -n` snippet around them.
    public var message: String
    /// The absolute path edited.
    public var path: String
    /// Whether the file existed before the command.
    public var prevExist: Bool
    /// The content before the command; nil when the file did not exist.
    public var oldContent: String?
    /// The content after the command.
    public var newContent: String?
    /// A unified diff (`--- a/…`, `+++ b/…`, 3 lines of context) from the old content to the new.
    public var diff: String

    public init(
        message: String,
        path: String,
        prevExist: Bool,
        oldContent: String?,
        newContent: String?,
        diff: String
    ) {
        self.message = message
        self.path = path
        self.prevExist = prevExist
        self.oldContent = oldContent
        self.newContent = newContent
        self.diff = diff
    }
}

extension FileTools {
    /// Runs one editor command on an absolute path and answers with a message and a unified diff.
    public func edit(_ command: EditCommand) throws -> EditOutcome {
        switch command {
        case .create(let path, let fileText):
            return try create(path: path, fileText: fileText)
        case .strReplace(let path, let oldStr, let newStr):
            return try strReplace(path: path, oldStr: oldStr, newStr: newStr)
        case .insert(let path, let insertLine, let newStr):
            return try insert(path: path, insertLine: insertLine, newStr: newStr)
        case .undoEdit(let path):
            return try undoEdit(path: path)
        }
    }

    func create(path: String, fileText: String) throws -> EditOutcome {
        let resolved = try editorPath(path)
        if Self.kind(of: resolved) != nil {
            throw DeckhandError(
                .fileExists,
                "Invalid `path` parameter: \(path). A file already exists at \(path), and `create` never overwrites "
                    + "one. Use `str_replace` or `insert` to change it."
            )
        }
        try write(path: resolved, content: fileText)
        return EditOutcome(
            message: "File created successfully at: \(path)",
            path: resolved,
            prevExist: false,
            oldContent: nil,
            newContent: fileText,
            diff: UnifiedDiff(path: resolved).diff(from: "", to: fileText)
        )
    }

    func strReplace(path: String, oldStr: String, newStr: String) throws -> EditOutcome {
        let resolved = try existingFile(path)
        guard !oldStr.isEmpty else {
            throw Self.invalid(
                "old_str",
                "``",
                "`old_str` must not be empty. To add text use `insert`, or `create` for a new file."
            )
        }
        guard oldStr != newStr else {
            throw Self.invalid(
                "new_str",
                "`\(newStr)`",
                "No replacement was performed: `new_str` is the same as `old_str`."
            )
        }
        let old = try Self.loadText(resolved)
        let text = Array(old.utf8)
        let needle = Array(oldStr.utf8)
        let matches = Self.occurrences(of: needle, in: text)
        guard let match = matches.first else {
            throw DeckhandError(
                .fileNoUniqueMatch,
                "No replacement was performed, old_str `\(oldStr)` did not appear verbatim in \(path)."
            )
        }
        let lineOf = { (offset: Int) in text[..<offset].lazy.filter { $0 == UInt8(ascii: "\n") }.count + 1 }
        if matches.count > 1 {
            var lines: [Int] = []
            for offset in matches where lines.last != lineOf(offset) { lines.append(lineOf(offset)) }
            throw DeckhandError(
                .fileNoUniqueMatch,
                "No replacement was performed. Multiple occurrences of old_str `\(oldStr)` in lines "
                    + "\(Self.describe(lines)). Please ensure it is unique."
            )
        }
        let newBytes = text[..<match] + Array(newStr.utf8) + text[(match + needle.count)...]
        let new = String(decoding: newBytes, as: UTF8.self)
        try Self.store(new, at: resolved)
        remember(old, for: resolved)

        let line = lineOf(match)
        let first = max(0, line - Self.snippetContext)
        let last = line + Self.snippetContext + newStr.utf8.filter { $0 == UInt8(ascii: "\n") }.count
        let newLines = UnifiedDiff.lines(of: new)
        let snippet = newLines[min(first, newLines.count)..<min(last, newLines.count)].joined()
        return EditOutcome(
            message: "The file \(path) has been edited. "
                + Self.numbered(snippet, description: "a snippet of \(path)", firstLine: first + 1)
                + "Review the changes and make sure they are as expected. Edit the file again if necessary.",
            path: resolved,
            prevExist: true,
            oldContent: old,
            newContent: new,
            diff: UnifiedDiff(path: resolved).diff(from: old, to: new)
        )
    }

    func insert(path: String, insertLine: Int, newStr: String) throws -> EditOutcome {
        let resolved = try existingFile(path)
        let old = try Self.loadText(resolved)
        let lines = UnifiedDiff.lines(of: old)
        guard insertLine >= 0, insertLine <= lines.count else {
            throw Self.invalid(
                "insert_line",
                String(insertLine),
                "It should be within the range of allowed values: [0, \(lines.count)]."
            )
        }
        var head = lines[..<insertLine].joined()
        if !head.isEmpty && !head.hasSuffix("\n") { head += "\n" }
        let block = newStr.hasSuffix("\n") ? newStr : newStr + "\n"
        let new = head + block + lines[insertLine...].joined()
        try Self.store(new, at: resolved)
        remember(old, for: resolved)

        let inserted = UnifiedDiff.lines(of: block).count
        let newLines = UnifiedDiff.lines(of: new)
        let first = max(0, insertLine - Self.snippetContext)
        let last = min(newLines.count, insertLine + Self.snippetContext + inserted)
        let snippet = newLines[first..<last].joined()
        return EditOutcome(
            message: "The file \(path) has been edited. "
                + Self.numbered(snippet, description: "a snippet of the edited file", firstLine: first + 1)
                + "Review the changes and make sure they are as expected (correct indentation, no duplicate lines, "
                + "etc). Edit the file again if necessary.",
            path: resolved,
            prevExist: true,
            oldContent: old,
            newContent: new,
            diff: UnifiedDiff(path: resolved).diff(from: old, to: new)
        )
    }

    func undoEdit(path: String) throws -> EditOutcome {
        let resolved = try existingFile(path)
        let current = try Self.loadText(resolved)
        guard let previous = history[resolved]?.popLast() else {
            throw DeckhandError(
                .fileNoHistory,
                "No edit history found for \(path): there is no earlier edit of this file to undo."
            )
        }
        try Self.store(previous, at: resolved)
        return EditOutcome(
            message: "Last edit to \(path) undone successfully. "
                + Self.numbered(previous, description: path, firstLine: 1),
            path: resolved,
            prevExist: true,
            oldContent: current,
            newContent: previous,
            diff: UnifiedDiff(path: resolved).diff(from: current, to: previous)
        )
    }

    // MARK: - Helpers

    /// An absolute path that exists and is not a directory.
    func existingFile(_ path: String) throws -> String {
        let resolved = try editorPath(path)
        switch Self.kind(of: resolved) {
        case .none:
            throw DeckhandError(
                .fileNotFound,
                "Invalid `path` parameter: \(path). The path \(path) does not exist. Please provide a valid path."
            )
        case .directory:
            throw DeckhandError(
                .fileWrongKind,
                "Invalid `path` parameter: \(path). The path \(path) is a directory, and only the `view` command "
                    + "can be used on directories."
            )
        case .file:
            return resolved
        }
    }

    func remember(_ content: String, for path: String) {
        var entries = history[path] ?? []
        entries.append(content)
        if entries.count > Self.maximumHistoryPerFile {
            entries.removeFirst(entries.count - Self.maximumHistoryPerFile)
        }
        history[path] = entries
    }

    /// Byte offsets of the non-overlapping occurrences of `needle` in `text`, left to right.
    static func occurrences(of needle: [UInt8], in text: [UInt8]) -> [Int] {
        guard !needle.isEmpty, needle.count <= text.count else { return [] }
        var result: [Int] = []
        var index = 0
        let first = needle[0]
        while index <= text.count - needle.count {
            if text[index] == first && text[index..<(index + needle.count)].elementsEqual(needle) {
                result.append(index)
                index += needle.count
            } else {
                index += 1
            }
        }
        return result
    }
}
