/// One `run` action for the persistent shell.
public struct ShellRequest: Sendable {
    /// The command line, the text to type (`isInput`), `C-c`/`C-d`/`C-z`, or empty to read more output.
    public var command: String
    /// Whether `command` is typed into the running program instead of being run as a new command.
    public var isInput: Bool = false
    /// The action's `timeout`: a hard limit after which the answer says the command is still running.
    public var hardTimeout: Duration? = nil
    /// Whether to wait for completion (or the hard timeout) even when no new output arrives for a while.
    public var blocking: Bool = false

    /// A request; by default a new, non-blocking command without a hard limit.
    public init(command: String, isInput: Bool = false, hardTimeout: Duration? = nil, blocking: Bool = false) {
        self.command = command
        self.isInput = isInput
        self.hardTimeout = hardTimeout
        self.blocking = blocking
    }
}

/// What the shell answers to a `ShellRequest`: the output and the observation's metadata.
public struct ShellOutcome: Sendable, Equatable {
    /// Output (stdout and stderr merged) since the previous answer, cut in the middle when too long.
    public var output: String
    /// The command's exit code, or -1 while it is still running (or when nothing ran).
    public var exitCode: Int
    /// The shell's working directory after the command.
    public var workingDirectory: String
    /// The last background job's process id (`$!`), or -1 unless known.
    public var pid: Int
    /// The user the shell runs as.
    public var username: String
    /// The sandbox's host name.
    public var hostname: String
    /// The `python` on the shell's `PATH`, when there is one.
    public var pythonInterpreterPath: String?
    /// A note shown before the output (e.g. that it continues the previous command's output).
    public var prefix: String
    /// A note shown after the output (completion, timeouts, what to do next).
    public var suffix: String

    /// An answer; `pid` is -1 and the notes are empty unless given.
    public init(
        output: String,
        exitCode: Int,
        workingDirectory: String,
        pid: Int = -1,
        username: String,
        hostname: String,
        pythonInterpreterPath: String? = nil,
        prefix: String = "",
        suffix: String = ""
    ) {
        self.output = output
        self.exitCode = exitCode
        self.workingDirectory = workingDirectory
        self.pid = pid
        self.username = username
        self.hostname = hostname
        self.pythonInterpreterPath = pythonInterpreterPath
        self.prefix = prefix
        self.suffix = suffix
    }
}
