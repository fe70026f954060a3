import DeckhandCore
import Foundation
import Glibc
import Synchronization

/// One persistent bash on a pseudo-terminal: the shell behind the `run` action (PROTOCOL.md §C).
///
/// The working directory and environment persist from one command to the next. Completion and the exit code
/// come from a prompt marker (`PromptMarker`) that the reader thread sees as soon as bash prints it; the
/// marker and the shell's set-up never reach an answer. Calls to `execute` run one at a time, in order.
public final class BashSession: Sendable {
    private struct Launch: Sendable {
        var workingDirectory: String
        var user: (uid: Int, gid: Int)?
        var environment: [String: String]
        var noChangeTimeout: Duration
    }

    private struct State: Sendable {
        var process: PTYProcess
        var marker: PromptMarker
        var fields: PromptMarker.Fields
        /// The command still running, if any.
        var running: String?
        /// Output of the running command not yet answered.
        var output: [UInt8] = []
        /// Bytes dropped from the middle of `output` to bound memory while a command floods the terminal.
        var droppedBytes = 0
        /// Bytes read that may still hold (the start of) a prompt.
        var carry: [UInt8] = []
        var pythonLookup: (path: String, python: String?)?
        var closed = false
    }

    private let launch: Launch
    private let gate = AsyncSerialGate()
    private let state: Mutex<State>

    private init(launch: Launch, state: State) {
        self.launch = launch
        self.state = Mutex(state)
    }

    /// Starts bash in `workingDirectory` (created when missing).
    ///
    /// When `username` names someone other than the current user, bash runs as that user; a missing user is
    /// created (`useradd -m`, with `uid` when given) if we are root, and the workspace is handed to it.
    /// `noChangeTimeout` is how long a non-blocking command may stay silent before the answer returns.
    public static func start(
        workingDirectory: String,
        username: String?,
        uid: Int?,
        noChangeTimeout: Duration,
        environment: [String: String] = [:]
    ) async throws -> BashSession {
        var createdDirectory = false
        if !FileManager.default.fileExists(atPath: workingDirectory) {
            do {
                try FileManager.default.createDirectory(atPath: workingDirectory, withIntermediateDirectories: true)
            } catch {
                throw DeckhandError(.shellUnavailable, "cannot create \(workingDirectory)", underlying: error)
            }
            createdDirectory = true
        }
        var shellEnvironment = ProcessInfo.processInfo.environment
        // The session key is the server's alone: the agent's shell never inherits it.
        for name in ["PS1", "PS2", "PS4", "PROMPT_COMMAND", "BASH_ENV", "ENV", "HISTFILE", "SESSION_API_KEY"] {
            shellEnvironment[name] = nil
        }
        shellEnvironment["TERM"] = "dumb"
        shellEnvironment["PAGER"] = "cat"
        shellEnvironment["GIT_PAGER"] = "cat"
        var user: (uid: Int, gid: Int)?
        if let username, username != currentUsername() {
            let account = try await ensureUser(username, uid: uid)
            user = (account.uid, account.gid)
            shellEnvironment["HOME"] = account.home
            shellEnvironment["USER"] = username
            shellEnvironment["LOGNAME"] = username
            shellEnvironment["SHELL"] = "/bin/bash"
            if createdDirectory || account.created {
                _ = chown(workingDirectory, uid_t(account.uid), gid_t(account.gid))
            }
        }
        shellEnvironment.merge(environment) { _, new in new }
        let launch = Launch(
            workingDirectory: workingDirectory,
            user: user,
            environment: shellEnvironment,
            noChangeTimeout: noChangeTimeout
        )
        return BashSession(launch: launch, state: try await launchShell(launch, in: workingDirectory))
    }

    /// Runs `request` (or talks to the running command) and answers with its output and metadata.
    ///
    /// Throws `multipleCommands` when the text holds several top-level commands (nothing runs then), and
    /// `shellUnavailable` when the session is closed or bash cannot be restarted.
    public func execute(_ request: ShellRequest) async throws -> ShellOutcome {
        try await gate.run { try await executeSerially(request) }
    }

    /// Ends bash and everything it started (SIGHUP/SIGTERM, then SIGKILL), reaps it and stops the reader.
    public func close() async {
        let process = state.withLock { state -> PTYProcess? in
            guard !state.closed else { return nil }
            state.closed = true
            return state.process
        }
        await process?.terminate()
    }

    // MARK: - One call

    private func executeSerially(_ request: ShellRequest) async throws -> ShellOutcome {
        var current = state.withLock { $0 }
        guard !current.closed else { throw DeckhandError(.shellUnavailable, "the shell session is closed") }
        defer {
            state.withLock { stored in
                let closed = stored.closed
                stored = current
                stored.closed = stored.closed || closed
            }
        }
        var prefix = ""
        if let status = current.process.reap() {
            // bash went away between calls (`exit` with a job holding the terminal, killed): start a fresh one
            // where the last one was.
            collect(&current)
            let leftover = answer(&current, exitCode: Int(status), prefix: "").output
            current.running = nil
            current = try await restart(after: current)
            prefix =
                (leftover.isEmpty ? "" : leftover + "\n")
                + "[The shell had exited (code \(status)); a new shell was started in "
                + "\(current.fields.workingDirectory). Variables and functions set before are gone.]\n"
        }

        let text = request.command.trimmingCharacters(in: .whitespacesAndNewlines)
        let key = Self.controlKey(text)
        let started = ContinuousClock.now

        let wasRunning = current.running
        if wasRunning != nil, collect(&current) {
            // The previous command finished after its last answer.
            let exitCode = current.fields.exitCode
            var finished = answer(&current, exitCode: exitCode, prefix: prefix + Self.continuingPrefix)
            if text.isEmpty {
                finished.suffix = "\n[The command completed with exit code \(exitCode).]"
                return finished
            }
            if request.isInput || key != nil {
                finished.suffix =
                    "\n[The command completed with exit code \(exitCode) before your input arrived; "
                    + "the input was not sent.]"
                return finished
            }
            prefix =
                finished.prefix + (finished.output.isEmpty ? "" : finished.output + "\n")
                + "[The previous command completed with exit code \(exitCode). Below is the output of your "
                + "command.]\n"
        }

        if let running = current.running {
            if text.isEmpty {
                return try await wait(&current, started: started, request: request, continuing: true, prefix: prefix)
            }
            if request.isInput || key != nil {
                try current.process.write(key.map { [$0] } ?? Array((request.command + "\n").utf8))
                return try await wait(&current, started: started, request: request, continuing: true, prefix: prefix)
            }
            // A new command while one runs is not typed in: answer with what the running one printed since.
            collect(&current)
            var outcome = answer(&current, exitCode: -1, prefix: prefix + Self.continuingPrefix)
            outcome.suffix =
                "\n[Your command \"\(text)\" was NOT executed: the previous command (\"\(running)\") is still "
                + "running. Send an empty command to read more of its output, send C-c to interrupt it, or "
                + "send text with is_input to type into it; then send your command again.]"
            return outcome
        }

        if request.isInput || key != nil {
            var outcome = answer(&current, exitCode: -1, prefix: prefix)
            outcome.suffix = "[There is no running command to send input to. Send it as a command without is_input.]"
            return outcome
        }
        if text.isEmpty {
            var outcome = answer(&current, exitCode: -1, prefix: prefix)
            outcome.suffix = "[There is no running command whose output could be read.]"
            return outcome
        }
        let commands = CommandSplitter.split(text)
        if commands.count > 1 {
            let list = commands.enumerated().map { "(\($0.offset + 1)) \($0.element)" }.joined(separator: "\n")
            throw DeckhandError(
                .multipleCommands,
                "Cannot run several commands at once. Send one command per call, or chain them into one "
                    + "command with && or ;.\nCommands given:\n\(list)"
            )
        }
        guard let command = commands.first else {
            // Only comments: bash would do nothing.
            var outcome = answer(&current, exitCode: 0, prefix: prefix)
            outcome.suffix = "\n[The command completed with exit code 0.]"
            return outcome
        }
        // Output printed while idle (a background job) belongs before this command's.
        collect(&current)
        try current.process.write(Array((command + "\n").utf8))
        current.running = command
        return try await wait(&current, started: started, request: request, continuing: false, prefix: prefix)
    }

    /// Waits for the running command's prompt, a soft or hard timeout, or the shell's exit, and answers.
    private func wait(
        _ current: inout State,
        started: ContinuousClock.Instant,
        request: ShellRequest,
        continuing: Bool,
        prefix: String
    ) async throws -> ShellOutcome {
        let softTimeout = request.blocking ? nil : launch.noChangeTimeout
        let prefix = prefix + (continuing ? Self.continuingPrefix : "")
        var lastDeadline: ContinuousClock.Instant?
        while true {
            if collect(&current) {
                var outcome = answer(&current, exitCode: current.fields.exitCode, prefix: prefix)
                outcome.suffix = "\n[The command completed with exit code \(current.fields.exitCode).]"
                return outcome
            }
            let process = current.process
            if process.hasHungUp || current.closed || state.withLock({ $0.closed }) {
                return try await shellEnded(&current, prefix: prefix)
            }
            let now = ContinuousClock.now
            if let deadline = lastDeadline, now >= deadline, process.reap() != nil {
                // bash exited while something else still holds its terminal.
                return try await shellEnded(&current, prefix: prefix)
            }
            let lastChange = max(started, process.lastOutput)
            let softDeadline = softTimeout.map { lastChange + $0 }
            let hardDeadline = request.hardTimeout.map { started + $0 }
            if let hardDeadline, now >= hardDeadline, let hardTimeout = request.hardTimeout {
                var outcome = answer(&current, exitCode: -1, prefix: prefix)
                outcome.suffix =
                    "\n[The command timed out after \(Self.seconds(hardTimeout)) seconds and is still running. "
                    + "Send an empty command to read more output, send C-c to interrupt it, or send text with "
                    + "is_input to type into it.]"
                return outcome
            }
            if let softDeadline, now >= softDeadline {
                var outcome = answer(&current, exitCode: -1, prefix: prefix)
                outcome.suffix =
                    "\n[The command has had no new output for \(Self.seconds(launch.noChangeTimeout)) seconds "
                    + "and is still running. You may send an empty command to read more output, send keys "
                    + "(C-c, C-z, C-d) to interrupt it, or send text with is_input to type into it.]"
                return outcome
            }
            if Task.isCancelled { throw CancellationError() }
            let deadline = [softDeadline, hardDeadline].compactMap { $0 }.min()
            lastDeadline = deadline
            await process.waitForOutput(until: deadline)
        }
    }

    /// Moves what the reader has read into the answer's output; true when it held the running command's prompt.
    @discardableResult
    private func collect(_ current: inout State) -> Bool {
        current.carry.append(contentsOf: current.process.takeOutput())
        defer {
            // Only the start and the end of the output are ever shown: keep memory bounded under a flood.
            if current.output.count > Self.outputHoldLimit {
                let keep = Self.outputHoldLimit / 4
                let dropped = current.output.count - 2 * keep
                current.output.removeSubrange(keep..<(keep + dropped))
                current.droppedBytes += dropped
            }
        }
        while true {
            switch current.marker.scan(current.carry) {
            case .complete(let output, let fields, let rest):
                current.output.append(contentsOf: output)
                current.carry = rest
                current.fields = fields
                if current.running != nil {
                    current.running = nil
                    return true
                }
            // A prompt with no command of ours running (a stray extra prompt): drop it, keep looking.
            case .partial(let safeCount):
                current.output.append(contentsOf: current.carry[..<safeCount])
                current.carry.removeFirst(safeCount)
                return false
            }
        }
    }

    /// The answer carrying the output collected so far (which it consumes).
    private func answer(_ current: inout State, exitCode: Int, prefix: String) -> ShellOutcome {
        let complete = current.running == nil
        var bytes = current.output
        var keep: [UInt8] = []
        if !complete {
            // Keep an unfinished UTF-8 sequence for the next answer.
            let cut = Self.utf8Boundary(bytes)
            keep = Array(bytes[cut...])
            bytes.removeSubrange(cut...)
        }
        current.output = keep
        let dropped = current.droppedBytes
        current.droppedBytes = 0
        var text = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
        while text.hasSuffix("\n") { text.removeLast() }
        let fields = current.fields
        return ShellOutcome(
            output: OutputTruncation.truncate(text, alreadyCut: dropped),
            exitCode: exitCode,
            workingDirectory: fields.workingDirectory,
            pid: fields.pid,
            username: fields.username,
            hostname: fields.hostname,
            pythonInterpreterPath: python(&current),
            prefix: prefix
        )
    }

    /// bash hung up while a command ran: answer with the output and start a fresh shell for the next call.
    private func shellEnded(_ current: inout State, prefix: String) async throws -> ShellOutcome {
        collect(&current)
        let process = current.process
        var status = process.reap()
        while status == nil {
            try? await Task.sleep(for: .milliseconds(5))
            status = process.reap()
        }
        current.running = nil
        var outcome = answer(&current, exitCode: Int(status ?? -1), prefix: prefix)
        if current.closed || state.withLock({ $0.closed }) {
            outcome.suffix = "\n[The shell session was closed.]"
            return outcome
        }
        current = try await restart(after: current)
        outcome.suffix =
            "\n[The shell exited with code \(status ?? -1). A new shell was started in "
            + "\(current.fields.workingDirectory); variables and functions set before are gone.]"
        return outcome
    }

    private func restart(after old: State) async throws -> State {
        await old.process.terminate(grace: .milliseconds(50))
        guard !state.withLock({ $0.closed }) else {
            throw DeckhandError(.shellUnavailable, "the shell session is closed")
        }
        var directory = old.fields.workingDirectory
        if !FileManager.default.fileExists(atPath: directory) { directory = launch.workingDirectory }
        return try await Self.launchShell(launch, in: directory)
    }

    // MARK: - Starting bash

    /// Spawns bash, installs the prompt marker and swallows everything up to the first prompt.
    private static func launchShell(_ launch: Launch, in directory: String) async throws -> State {
        let process = try PTYProcess.spawn(
            path: "/bin/bash",
            arguments: ["--noprofile", "--norc", "-i"],
            environment: launch.environment,
            directory: directory,
            user: launch.user
        )
        let marker = PromptMarker.random()
        let setup = [
            "set +H",  // no `!` history expansion inside commands
            "bind 'set enable-bracketed-paste off' 2>/dev/null",
            "bind 'set disable-completion on' 2>/dev/null",  // a tab in a command is a tab
            "unset PROMPT_COMMAND HISTFILE",
            "PS2=''",
            marker.assignment,
        ].joined(separator: "; ")
        do {
            try process.write(Array((setup + "\n").utf8))
            var carry: [UInt8] = []
            let deadline = ContinuousClock.now + .seconds(15)
            while true {
                carry.append(contentsOf: process.takeOutput())
                if case .complete(_, let fields, let rest) = marker.scan(carry) {
                    return State(process: process, marker: marker, fields: fields, carry: rest)
                }
                if process.hasHungUp || ContinuousClock.now >= deadline {
                    let said = String(decoding: carry.suffix(500), as: UTF8.self)
                    throw DeckhandError(.shellUnavailable, "bash did not start: \(said)")
                }
                await process.waitForOutput(until: deadline)
            }
        } catch {
            await process.terminate(grace: .milliseconds(50))
            throw error
        }
    }

    private struct Account {
        var uid: Int
        var gid: Int
        var home: String
        var created: Bool
    }

    private static func ensureUser(_ name: String, uid: Int?) async throws -> Account {
        if let account = lookUp(name) { return account }
        guard geteuid() == 0 else {
            throw DeckhandError(.shellUnavailable, "user \(name) does not exist and we are not root to create it")
        }
        var arguments = ["-m", "-s", "/bin/bash"]
        if let uid { arguments += ["-u", String(uid)] }
        let status = try await runTool("/usr/sbin/useradd", arguments + [name])
        guard status == 0, var account = lookUp(name) else {
            throw DeckhandError(.shellUnavailable, "useradd \(name) failed with status \(status)")
        }
        account.created = true
        return account
    }

    private static func lookUp(_ name: String) -> Account? {
        guard let entry = getpwnam(name) else { return nil }
        return Account(
            uid: Int(entry.pointee.pw_uid),
            gid: Int(entry.pointee.pw_gid),
            home: String(cString: entry.pointee.pw_dir),
            created: false
        )
    }

    private static func currentUsername() -> String? {
        guard let entry = getpwuid(geteuid()) else { return nil }
        return String(cString: entry.pointee.pw_name)
    }

    /// Runs a tool to completion without blocking a thread; its exit status.
    private static func runTool(_ path: String, _ arguments: [String]) async throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        return try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
    }

    // MARK: - Helpers

    /// The most output bytes held for one answer; beyond it the middle is dropped (and counted).
    private static let outputHoldLimit = 4 << 20

    private static let continuingPrefix = "[Below is the output of the previous command.]\n"

    /// `C-c`, `C-d`, `C-z` (any `C-` and a letter) as the control character it stands for.
    static func controlKey(_ text: String) -> UInt8? {
        let scalars = Array(text.unicodeScalars)
        guard scalars.count == 3, scalars[0] == "C", scalars[1] == "-", scalars[2].isASCIILetter else { return nil }
        return UInt8(scalars[2].value) & 0x1F
    }

    private func python(_ current: inout State) -> String? {
        let path = current.fields.path
        if let lookup = current.pythonLookup, lookup.path == path { return lookup.python }
        var found: String?
        search: for name in ["python", "python3"] {
            for directory in path.split(separator: ":") where !directory.isEmpty {
                let candidate = "\(directory)/\(name)"
                if access(candidate, X_OK) == 0 {
                    found = candidate
                    break search
                }
            }
        }
        current.pythonLookup = (path, found)
        return found
    }

    /// `10` for ten seconds, `1.5` for one and a half.
    private static func seconds(_ duration: Duration) -> String {
        let seconds = duration.seconds
        return seconds.rounded() == seconds ? String(Int(seconds)) : String(seconds)
    }

    /// The end of the last complete UTF-8 sequence in `bytes`.
    private static func utf8Boundary(_ bytes: [UInt8]) -> Int {
        var index = bytes.count
        var continuation = 0
        while index > 0 && continuation < 3 && bytes[index - 1] & 0xC0 == 0x80 {
            index -= 1
            continuation += 1
        }
        guard index > 0 else { return bytes.count }
        let lead = bytes[index - 1]
        let length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        return length > continuation + 1 ? index - 1 : bytes.count
    }
}

extension Unicode.Scalar {
    fileprivate var isASCIILetter: Bool {
        (value >= 65 && value <= 90) || (value >= 97 && value <= 122)
    }
}
