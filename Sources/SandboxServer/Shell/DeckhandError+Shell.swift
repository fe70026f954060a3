import DeckhandCore

extension DeckhandError.Code {
    /// A `run` action held several top-level commands separated by newlines; nothing was run.
    public static let multipleCommands: Self = "SANDBOX$MULTIPLE_COMMANDS"
    /// The shell could not be started (spawn failure, unknown user, no workspace).
    public static let shellUnavailable: Self = "SANDBOX$SHELL_UNAVAILABLE"
}
