import DeckhandCore

/// The prompt the shell prints after each command, and how to find it in the terminal's output.
///
/// `PS1` is set to `RS "DH" nonce US $? US $! US \u US \H US $PWD US $PATH US nonce "HD" RS` (RS = 0x1E,
/// US = 0x1F), so it carries the exit code, the last background job's pid, the user, the host, the working
/// directory and the `PATH`, between delimiters no program prints by chance: the nonce is random per session
/// and the separators are control characters. The variable's own value (shown by `set`, `declare -p`) holds
/// `$?` unexpanded and so never parses as a marker.
struct PromptMarker: Sendable {
    /// What one prompt says about the shell after a command.
    struct Fields: Sendable, Equatable {
        var exitCode: Int
        var pid: Int
        var username: String
        var hostname: String
        var workingDirectory: String
        var path: String
    }

    /// The result of looking for a prompt in the bytes read so far.
    enum Scan: Equatable {
        /// A whole prompt: the output before it, what it says, and the bytes after it.
        case complete(output: [UInt8], fields: Fields, rest: [UInt8])
        /// No whole prompt yet: the first `safeCount` bytes are output; the rest may be the start of a prompt.
        case partial(safeCount: Int)
    }

    static let recordSeparator: UInt8 = 0x1E
    static let unitSeparator: UInt8 = 0x1F
    /// A begin delimiter followed by this many bytes without an end is not a prompt.
    static let longestPrompt = 16 * 1024

    let nonce: String
    let begin: [UInt8]
    let end: [UInt8]

    init(nonce: String) {
        self.nonce = nonce
        begin = [Self.recordSeparator] + Array("DH\(nonce)".utf8) + [Self.unitSeparator]
        end = [Self.unitSeparator] + Array("\(nonce)HD".utf8) + [Self.recordSeparator]
    }

    /// A marker with a fresh random nonce.
    static func random() -> PromptMarker {
        var generator = SystemRandomNumberGenerator()
        let nonce = (0..<12).map { _ in String(generator.next(upperBound: UInt8(36)), radix: 36) }.joined()
        return PromptMarker(nonce: nonce)
    }

    /// The bash assignment that makes every prompt a marker (ANSI-C quoted, so no expansion happens now).
    var assignment: String {
        let us = "\\037"
        let rs = "\\036"
        let fields = ["$?", "$!", "\\\\u", "\\\\H", "$PWD", "$PATH"].joined(separator: us)
        return "PS1=$'\(rs)DH\(nonce)\(us)\(fields)\(us)\(nonce)HD\(rs)'"
    }

    /// Looks for the first whole prompt in `bytes`.
    func scan(_ bytes: [UInt8]) -> Scan {
        var from = 0
        while let start = bytes.firstIndex(of: begin, from: from) {
            let bodyStart = start + begin.count
            guard let stop = bytes.firstIndex(of: end, from: bodyStart) else {
                if bytes.count - start > Self.longestPrompt {
                    from = start + 1
                    continue
                }
                return .partial(safeCount: start)
            }
            if let fields = Self.parse(bytes[bodyStart..<stop]) {
                return .complete(
                    output: Array(bytes[..<start]),
                    fields: fields,
                    rest: Array(bytes[(stop + end.count)...])
                )
            }
            from = start + 1
        }
        // Hold back a tail that could be the beginning of a prompt split across reads.
        var held = min(begin.count - 1, bytes.count)
        while held > 0 && !bytes[(bytes.count - held)...].elementsEqual(begin[..<held]) { held -= 1 }
        return .partial(safeCount: bytes.count - held)
    }

    private static func parse(_ body: ArraySlice<UInt8>) -> Fields? {
        let parts = body.split(separator: unitSeparator, omittingEmptySubsequences: false)
        guard parts.count == 6, let exitCode = Int(String(decoding: parts[0], as: UTF8.self)) else { return nil }
        return Fields(
            exitCode: exitCode,
            pid: Int(String(decoding: parts[1], as: UTF8.self)) ?? -1,
            username: String(decoding: parts[2], as: UTF8.self),
            hostname: String(decoding: parts[3], as: UTF8.self),
            workingDirectory: String(decoding: parts[4], as: UTF8.self),
            path: String(decoding: parts[5], as: UTF8.self)
        )
    }
}
