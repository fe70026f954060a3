import DeckhandCore

extension DeckhandError.Code {
    /// A file or directory the model named does not exist.
    public static let fileNotFound: Self = "SANDBOX$FILE_NOT_FOUND"
    /// A file holds bytes that are not UTF-8 text (NUL bytes or invalid sequences).
    public static let fileIsBinary: Self = "SANDBOX$FILE_BINARY"
    /// A file is larger than the file tools will load.
    public static let fileTooLarge: Self = "SANDBOX$FILE_TOO_LARGE"
    /// A path names a directory where a file is needed, or a file where a directory is needed.
    public static let fileWrongKind: Self = "SANDBOX$FILE_WRONG_KIND"
    /// `create` was asked for a path that already exists.
    public static let fileExists: Self = "SANDBOX$FILE_EXISTS"
    /// A parameter of a file action is missing or out of range (relative path, bad `view_range`, …).
    public static let fileInvalidParameter: Self = "SANDBOX$FILE_INVALID_PARAMETER"
    /// `str_replace` found `old_str` nowhere, or more than once.
    public static let fileNoUniqueMatch: Self = "SANDBOX$FILE_NO_UNIQUE_MATCH"
    /// `undo_edit` found no earlier content to restore.
    public static let fileNoHistory: Self = "SANDBOX$FILE_NO_HISTORY"
    /// The file system refused a read or a write.
    public static let fileIOFailed: Self = "SANDBOX$FILE_IO"
    /// An archive entry would land outside the destination (`../`, an absolute path, a symlink out).
    public static let archiveUnsafeEntry: Self = "SANDBOX$ARCHIVE_UNSAFE_ENTRY"
    /// An archive is not a zip this server can read (truncated, encrypted, an unsupported method).
    public static let archiveMalformed: Self = "SANDBOX$ARCHIVE_MALFORMED"
}
