import DeckhandCore
import Foundation

/// The sandbox's file tools (PROTOCOL.md §B, §C, §E): `read`, `write`, the `str_replace_editor` commands and
/// `/list_files`, on the real file system.
///
/// An actor because `undo_edit` keeps a per-file history of earlier contents. Failures are thrown as
/// ``DeckhandError`` with a `SANDBOX$FILE_…` code and a message written for the model to read.
public actor FileTools {
    /// Where relative paths resolve (the shell's working directory).
    public private(set) var workingDirectory: String
    /// Earlier contents per absolute path, newest last, for `undo_edit`.
    var history: [String: [String]] = [:]

    /// Edits remembered per file for `undo_edit`.
    static let maximumHistoryPerFile = 10
    /// Files above this size are refused (as OpenHands' editor does at 10 MB).
    static let maximumFileBytes = 10 << 20
    /// Longest text a view returns before it is clipped with a notice.
    static let maximumViewCharacters = 16_000
    /// Lines shown before and after an edit in its snippet.
    static let snippetContext = 4

    /// File tools resolving relative paths against `workingDirectory`.
    public init(workingDirectory: String) {
        self.workingDirectory = workingDirectory
    }

    /// Moves the directory relative paths resolve against (when the shell's `cwd` changes).
    public func setWorkingDirectory(_ path: String) {
        workingDirectory = path
    }

    // MARK: - read

    /// The default `read`: lines `[start, end)` (0-based; `end == -1` reads to the end) of a text file as they are.
    ///
    /// A directory gives the same two-level listing as ``view(path:viewRange:)``. A missing path, or a file
    /// that is not UTF-8 text, throws an error saying so.
    public func read(path: String, start: Int = 0, end: Int = -1) throws -> String {
        let resolved = resolve(path)
        switch Self.kind(of: resolved) {
        case .none:
            throw DeckhandError(
                .fileNotFound,
                "File not found: \(resolved). It does not exist; your current working directory is \(workingDirectory)."
            )
        case .directory:
            return try directoryListing(resolved)
        case .file:
            let lines = UnifiedDiff.lines(of: try Self.loadText(resolved))
            let lower = min(max(start, 0), lines.count)
            let upper = end < 0 ? lines.count : min(max(end, lower), lines.count)
            return lines[lower..<upper].joined()
        }
    }

    // MARK: - view (oh_aci)

    /// The editor's `view`: the file as `cat -n` numbers it, or a directory's entries two levels deep.
    ///
    /// `viewRange` is `[first, last]`, 1-based and inclusive, with `-1` as `last` for the end of the file.
    public func view(path: String, viewRange: [Int]? = nil) throws -> String {
        let resolved = try editorPath(path)
        guard let kind = Self.kind(of: resolved) else {
            throw Self.invalid("path", path, "The path \(path) does not exist. Please provide a valid path.")
        }
        if kind == .directory {
            if let viewRange, !viewRange.isEmpty {
                throw Self.invalid(
                    "view_range",
                    Self.describe(viewRange),
                    "`view_range` can only be used with a file, and \(path) is a directory."
                )
            }
            return try directoryListing(resolved)
        }
        let text = try Self.loadText(resolved)
        guard let viewRange, !viewRange.isEmpty else {
            return Self.numbered(text, description: path, firstLine: 1)
        }
        let lines = UnifiedDiff.lines(of: text)
        guard viewRange.count == 2 else {
            throw Self.invalid("view_range", Self.describe(viewRange), "It should be a list of two integers.")
        }
        let first = viewRange[0]
        var last = viewRange[1]
        guard first >= 1, first <= lines.count else {
            throw Self.invalid(
                "view_range",
                Self.describe(viewRange),
                "Its first element `\(first)` should be within the range of lines of the file: [1, \(lines.count)]."
            )
        }
        var note: String?
        if last == -1 {
            last = lines.count
        } else if last > lines.count {
            note = "Only lines up to \(lines.count) are shown: the file has \(lines.count) lines."
            last = lines.count
        }
        guard last >= first else {
            throw Self.invalid(
                "view_range",
                Self.describe(viewRange),
                "Its second element `\(last)` should be at least its first element `\(first)` (or -1 for the end)."
            )
        }
        var output = Self.numbered(lines[(first - 1)..<last].joined(), description: path, firstLine: first)
        if let note { output += "\nNOTE: \(note)\n" }
        return output
    }

    // MARK: - write

    /// Writes `content` to `path`, creating missing parent directories and keeping an existing file's mode.
    ///
    /// With `start`/`end` (0-based, `end == -1` to the end) only those lines of an existing file are replaced by
    /// `content`'s lines; with the defaults the whole file becomes `content` exactly.
    public func write(path: String, content: String, start: Int = 0, end: Int = -1) throws {
        let resolved = resolve(path)
        let parent = (resolved as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        } catch {
            throw DeckhandError(
                .fileIOFailed,
                "Could not create the directory \(parent) for \(resolved): \(Self.reason(error))",
                underlying: error
            )
        }
        switch Self.kind(of: resolved) {
        case .directory:
            throw DeckhandError(.fileWrongKind, "Path is a directory: \(resolved). You can only write to files.")
        case .file where start != 0 || end != -1:
            let lines = UnifiedDiff.lines(of: try Self.loadText(resolved))
            let lower = min(max(start, 0), lines.count)
            let upper = end < 0 ? lines.count : min(max(end, lower), lines.count)
            var head = lines[..<lower].joined()
            if !head.isEmpty && !head.hasSuffix("\n") { head += "\n" }
            var middle = content
            if upper < lines.count && !middle.isEmpty && !middle.hasSuffix("\n") { middle += "\n" }
            try Self.store(head + middle + lines[upper...].joined(), at: resolved)
        default:
            try Self.store(content, at: resolved)
        }
    }

    // MARK: - list_files

    /// The entries of a directory (default: the working directory) for `/list_files`: directories first, each
    /// with a trailing `/`, then files, each group in case-insensitive order. Hidden entries are included.
    public func listFiles(path: String?) throws -> [String] {
        let resolved = path.map(resolve) ?? workingDirectory
        guard let kind = Self.kind(of: resolved) else {
            throw DeckhandError(.fileNotFound, "Directory not found: \(resolved). It does not exist.")
        }
        guard kind == .directory else {
            throw DeckhandError(.fileWrongKind, "Not a directory: \(resolved). Only a directory's files can be listed.")
        }
        let names = try Self.entries(of: resolved)
        var directories: [String] = []
        var files: [String] = []
        for name in names {
            if Self.kind(of: resolved + "/" + name) == .directory {
                directories.append(name + "/")
            } else {
                files.append(name)
            }
        }
        let order: (String, String) -> Bool = { lhs, rhs in
            let (l, r) = (lhs.lowercased(), rhs.lowercased())
            return l == r ? lhs < rhs : l < r
        }
        return directories.sorted(by: order) + files.sorted(by: order)
    }

    // MARK: - Paths

    /// `path` made absolute against the working directory and standardized (`.`/`..` removed, no symlinks read).
    func resolve(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : workingDirectory + "/" + path
        return Self.normalize(absolute)
    }

    /// The editor insists on absolute paths; a relative one gets a hint with the absolute path it may mean.
    func editorPath(_ path: String) throws -> String {
        guard path.hasPrefix("/") else {
            var hint = "The path should be an absolute path, starting with `/`."
            let guess = resolve(path)
            if Self.kind(of: guess) != nil { hint += " Maybe you meant \(guess)?" }
            throw Self.invalid("path", path, hint)
        }
        return Self.normalize(path)
    }

    /// Lexical normalization of an absolute path: no empty, `.` or `..` components, no trailing slash.
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." {
                _ = parts.popLast()
            } else {
                parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }

    enum Kind { case file, directory }

    /// What `path` is, following symlinks; nil when nothing is there.
    static func kind(of path: String) -> Kind? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return nil }
        return isDirectory.boolValue ? .directory : .file
    }

    static func entries(of directory: String) throws -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw DeckhandError(
                .fileIOFailed,
                "Could not list \(directory): \(reason(error))",
                underlying: error
            )
        }
    }

    // MARK: - Text in and out

    /// The file's text; throws when it is too large, binary, or unreadable.
    static func loadText(_ path: String) throws -> String {
        let data: Data
        do {
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
            if size > maximumFileBytes {
                throw DeckhandError(
                    .fileTooLarge,
                    "File is too large to read: \(path) has \(size / 1024 / 1024) MB, and the limit is "
                        + "\(maximumFileBytes / 1024 / 1024) MB. Use shell commands such as `head`, `sed -n` or `grep`."
                )
            }
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch let error as DeckhandError {
            throw error
        } catch {
            throw DeckhandError(.fileIOFailed, "Could not read \(path): \(reason(error))", underlying: error)
        }
        let bytes = [UInt8](data)
        guard !bytes.contains(0), let text = String(validating: bytes, as: UTF8.self) else {
            throw DeckhandError(
                .fileIsBinary,
                "The file \(path) is binary (it has NUL bytes or is not valid UTF-8), so it cannot be read as text."
            )
        }
        return text
    }

    /// Writes `text` over `path`; an existing file keeps its permission bits.
    static func store(_ text: String, at path: String) throws {
        let manager = FileManager.default
        let mode = (try? manager.attributesOfItem(atPath: path)[.posixPermissions]) as? NSNumber
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            if let mode {
                try manager.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
            }
        } catch {
            throw DeckhandError(.fileIOFailed, "Could not write \(path): \(reason(error))", underlying: error)
        }
    }

    // MARK: - Output

    /// `text` numbered as `cat -n` does (6-wide number, a tab, the line) under a header naming `description`.
    ///
    /// A final newline does not make an extra empty line; an empty text shows as one empty line 1.
    static func numbered(_ text: String, description: String, firstLine: Int) -> String {
        var body = text
        var clipped = false
        if body.count > maximumViewCharacters {
            body = String(body.prefix(maximumViewCharacters))
            clipped = true
        }
        var lines = body.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.count > 1, lines.last?.isEmpty == true, !clipped { lines.removeLast() }
        var output = "Here's the result of running `cat -n` on \(description):\n"
        for (offset, line) in lines.enumerated() {
            output += pad(firstLine + offset) + "\t" + line + "\n"
        }
        if clipped {
            output +=
                "<response clipped><NOTE>The file is too long to show whole. Use `view_range` to see other parts, "
                + "or `grep -n` in the shell to find the lines you need.</NOTE>\n"
        }
        return output
    }

    static func pad(_ number: Int) -> String {
        let digits = String(number)
        return digits.count >= 6 ? digits : String(repeating: " ", count: 6 - digits.count) + digits
    }

    /// Files and directories up to two levels deep, hidden ones left out (and counted), following symlinks.
    func directoryListing(_ path: String) throws -> String {
        var found: [String] = [path]
        let top = try Self.entries(of: path)
        let hidden = top.filter { $0.hasPrefix(".") }.count
        for name in top where !name.hasPrefix(".") {
            let child = path == "/" ? "/" + name : path + "/" + name
            found.append(child)
            if Self.kind(of: child) == .directory, let inner = try? Self.entries(of: child) {
                found += inner.filter { !$0.hasPrefix(".") }.map { child + "/" + $0 }
            }
        }
        found.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let listed = found.map { Self.kind(of: $0) == .directory && !$0.hasSuffix("/") ? $0 + "/" : $0 }
        var output =
            "Here's the files and directories up to 2 levels deep in \(path), excluding hidden items:\n"
            + listed.joined(separator: "\n")
        if output.count > Self.maximumViewCharacters {
            output =
                String(output.prefix(Self.maximumViewCharacters))
                + "\n<response clipped><NOTE>The listing is too long to show whole. View a subdirectory, or use "
                + "`ls` or `find` in the shell.</NOTE>"
        }
        if hidden > 0 {
            output +=
                "\n\n\(hidden) hidden files/directories in this directory are excluded. You can use "
                + "'ls -la \(path)' to see them."
        }
        return output
    }

    // MARK: - Errors

    static func invalid(_ parameter: String, _ value: String, _ hint: String) -> DeckhandError {
        DeckhandError(.fileInvalidParameter, "Invalid `\(parameter)` parameter: \(value). \(hint)")
    }

    static func describe(_ values: [Int]) -> String {
        "[" + values.map(String.init).joined(separator: ", ") + "]"
    }

    static func reason(_ error: any Error) -> String {
        (error as NSError).localizedDescription
    }
}
