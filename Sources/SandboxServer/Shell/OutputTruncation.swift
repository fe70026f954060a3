/// Cuts long command output in the middle, keeping its start and its end, as the model needs both.
public enum OutputTruncation {
    /// The most characters of output an observation carries (OpenHands' limit).
    public static let defaultLimit = 30_000

    /// `text` unchanged when it has at most `limit` characters; otherwise its first and last `limit / 2`
    /// characters with a note in between saying how many characters were cut (plus `alreadyCut`, characters
    /// dropped from the middle before `text` was made).
    public static func truncate(_ text: String, limit: Int = defaultLimit, alreadyCut: Int = 0) -> String {
        let count = text.count + alreadyCut
        guard count > limit else { return text }
        let head = limit / 2
        let tail = limit - head
        let cut = count - head - tail
        let start = text.prefix(head)
        let end = text.suffix(min(tail, max(0, text.count - head)))
        return "\(start)\n\n[... \(cut) characters cut from the middle of this output ...]\n\n\(end)"
    }
}
