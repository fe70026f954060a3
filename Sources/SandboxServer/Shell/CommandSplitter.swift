/// Finds the top-level commands of a bash command text, to refuse several commands sent in one call.
///
/// A newline separates two commands only at the top level: not inside quotes, `$( … )`, backticks, `${ … }`,
/// a here-document, `( … )`, `{ … }` or a compound command (`if … fi`, `for`/`while`/`until`/`select … done`,
/// `case … esac`), not after a trailing backslash and not after `&&`, `||` or `|`. Blank lines and lines that
/// hold only comments are not commands. This is a scanner for the common cases, not a full bash parser: when
/// in doubt it keeps text together.
public enum CommandSplitter {
    /// The top-level commands of `text`, each without surrounding blank lines; empty for a blank text.
    public static func split(_ text: String) -> [String] {
        var scanner = Scanner(Array(text.unicodeScalars))
        scanner.run()
        return scanner.commands
    }

    /// Whether `text` holds more than one top-level command.
    public static func hasSeveralCommands(_ text: String) -> Bool {
        split(text).count > 1
    }
}

extension CommandSplitter {
    private enum Opener: Equatable {
        case paren, dollarParen, brace, dollarBrace
        case keyword(String)
    }

    private struct HereDocument {
        var delimiter: String
        var stripsTabs: Bool
    }

    private struct Scanner {
        let chars: [Unicode.Scalar]
        var index = 0
        var stack: [Opener] = []
        var pendingHereDocuments: [HereDocument] = []
        /// Whether the next word starts a command (so a reserved word there counts).
        var atCommandStart = true
        /// Whether the last token was `&&`, `||` or `|`, which continue the command on the next line.
        var continues = false
        var segmentStart = 0
        var segmentHasCode = false
        /// After `function`: the next word is the function's name, and a `{` may follow it.
        var expectsFunctionName = false
        var commands: [String] = []

        init(_ chars: [Unicode.Scalar]) { self.chars = chars }

        func peek(_ offset: Int = 0) -> Unicode.Scalar? {
            index + offset < chars.count ? chars[index + offset] : nil
        }

        mutating func run() {
            while index < chars.count {
                let c = chars[index]
                switch c {
                case "\n":
                    index += 1
                    readHereDocumentBodies()
                    if stack.isEmpty && !continues {
                        endSegment(at: index)
                    }
                    if !continues { atCommandStart = true }
                case " ", "\t", "\r":
                    index += 1
                case "#":
                    skipComment()
                case "\\" where peek(1) == "\n":
                    index += 2
                case ";":
                    markCode()
                    index += 1
                    if peek() == ";" { index += 1 }  // `;;` ends a case item
                    if peek() == "&" { index += 1 }  // `;&` / `;;&`
                    atCommandStart = true
                    continues = false
                case "&":
                    markCode()
                    index += 1
                    if peek() == "&" {
                        index += 1
                        continues = true
                        atCommandStart = true
                    } else if peek() == ">" {
                        index += 1  // `&>` is a redirection
                        continues = false
                        atCommandStart = false
                    } else {
                        continues = false
                        atCommandStart = true
                    }
                case "|":
                    markCode()
                    index += 1
                    if peek() == "|" || peek() == "&" { index += 1 }
                    continues = true
                    atCommandStart = true
                case "(":
                    markCode()
                    index += 1
                    stack.append(.paren)
                    atCommandStart = true
                    continues = false
                case ")":
                    markCode()
                    index += 1
                    if let top = stack.last, top == .paren || top == .dollarParen {
                        stack.removeLast()
                    }
                    // In a `case`, a `)` ends a pattern and the item's commands follow.
                    atCommandStart = true
                    continues = false
                case "<" where peek(1) == "<" && peek(2) != "<":
                    markCode()
                    index += 2
                    readHereDocumentDelimiter()
                    continues = false
                case "<", ">":
                    markCode()
                    index += 1
                    continues = false
                    atCommandStart = false
                default:
                    markCode()
                    readWord()
                    continues = false
                }
            }
            endSegment(at: chars.count)
        }

        mutating func markCode() { segmentHasCode = true }

        mutating func endSegment(at end: Int) {
            if segmentHasCode {
                let text = String(String.UnicodeScalarView(chars[segmentStart..<end]))
                let trimmed = text.trimmingBlankLines()
                if !trimmed.isEmpty { commands.append(trimmed) }
            }
            segmentStart = end
            segmentHasCode = false
        }

        mutating func skipComment() {
            while index < chars.count && chars[index] != "\n" { index += 1 }
        }

        /// Reads one word (with its quotes and expansions) and tracks reserved words at a command's start.
        mutating func readWord() {
            var plain = ""
            var quoted = false
            let start = index
            while index < chars.count {
                let c = chars[index]
                if c == " " || c == "\t" || c == "\n" || c == ";" || c == "&" || c == "|" || c == "<" || c == ">"
                    || c == "(" || c == ")"
                {
                    // `name()` of a function definition, and `$(`/`<(` are handled inside.
                    break
                }
                switch c {
                case "\\":
                    quoted = true
                    index += 2
                case "'":
                    quoted = true
                    index += 1
                    skipSingleQuoted(ansiC: false)
                case "\"":
                    quoted = true
                    index += 1
                    skipDoubleQuoted()
                case "`":
                    quoted = true
                    index += 1
                    skipBackticks()
                case "$":
                    quoted = true
                    index += 1
                    skipDollar()
                case "}" where index == start && atCommandStart:
                    index += 1
                    if stack.last == .brace { stack.removeLast() }
                    atCommandStart = false
                    return
                default:
                    plain.unicodeScalars.append(c)
                    index += 1
                }
            }
            index = min(index, chars.count)
            if expectsFunctionName {
                expectsFunctionName = false
                atCommandStart = true
                return
            }
            guard !quoted, atCommandStart else {
                atCommandStart = false
                return
            }
            switch plain {
            case "{":
                stack.append(.brace)
                atCommandStart = true
            case "if", "while", "until":
                stack.append(.keyword(plain))
                atCommandStart = true
            case "for", "select", "case":
                stack.append(.keyword(plain))
                atCommandStart = false
            case "function":
                expectsFunctionName = true
            case "then", "do", "else", "elif", "!", "time":
                atCommandStart = true
            case "fi":
                popKeyword(["if"])
            case "done":
                popKeyword(["for", "select", "while", "until"])
            case "esac":
                popKeyword(["case"])
            default:
                atCommandStart = false
            }
        }

        mutating func popKeyword(_ names: Set<String>) {
            if let position = stack.lastIndex(where: {
                if case .keyword(let name) = $0 { return names.contains(name) }
                return false
            }) {
                stack.removeSubrange(position...)
            }
            atCommandStart = false
        }

        mutating func skipSingleQuoted(ansiC: Bool) {
            while index < chars.count {
                let c = chars[index]
                if ansiC && c == "\\" {
                    index += 2
                    continue
                }
                index += 1
                if c == "'" { return }
            }
        }

        mutating func skipDoubleQuoted() {
            while index < chars.count {
                let c = chars[index]
                switch c {
                case "\\":
                    index += 2
                case "\"":
                    index += 1
                    return
                case "`":
                    index += 1
                    skipBackticks()
                case "$":
                    index += 1
                    skipDollar()
                default:
                    index += 1
                }
            }
        }

        mutating func skipBackticks() {
            while index < chars.count {
                let c = chars[index]
                if c == "\\" {
                    index += 2
                    continue
                }
                index += 1
                if c == "`" { return }
            }
        }

        /// After a `$`: `$( … )`, `$(( … ))`, `${ … }`, `$' … '` or a plain parameter.
        mutating func skipDollar() {
            guard let next = peek() else { return }
            switch next {
            case "(":
                index += 1
                skipNested(close: ")", open: "(")
            case "{":
                index += 1
                skipNested(close: "}", open: "{")
            case "'":
                index += 1
                skipSingleQuoted(ansiC: true)
            default:
                break
            }
        }

        /// Skips a `$( … )` or `${ … }` body, with its own quotes, nesting and comments.
        mutating func skipNested(close: Unicode.Scalar, open: Unicode.Scalar) {
            var depth = 1
            var wordStart = true
            while index < chars.count {
                let c = chars[index]
                switch c {
                case "\\":
                    index += 2
                case "'":
                    index += 1
                    skipSingleQuoted(ansiC: false)
                case "\"":
                    index += 1
                    skipDoubleQuoted()
                case "`":
                    index += 1
                    skipBackticks()
                case "$":
                    index += 1
                    skipDollar()
                case "#" where wordStart && close == ")":
                    skipComment()
                case "\n":
                    index += 1
                    readHereDocumentBodies()
                case "<" where close == ")" && peek(1) == "<" && peek(2) != "<":
                    index += 2
                    readHereDocumentDelimiter()
                default:
                    index += 1
                    if c == open {
                        depth += 1
                    } else if c == close {
                        depth -= 1
                        if depth == 0 { return }
                    }
                }
                wordStart = (c == " " || c == "\t" || c == "\n" || c == ";" || c == "(" || c == "|" || c == "&")
            }
        }

        /// After `<<`: an optional `-`, blanks, then the delimiter word (quotes removed).
        mutating func readHereDocumentDelimiter() {
            var stripsTabs = false
            if peek() == "-" {
                stripsTabs = true
                index += 1
            }
            while peek() == " " || peek() == "\t" { index += 1 }
            var delimiter = ""
            while let c = peek() {
                if c == " " || c == "\t" || c == "\n" || c == ";" || c == "&" || c == "|" || c == "<" || c == ">"
                    || c == "(" || c == ")"
                {
                    break
                }
                index += 1
                switch c {
                case "'", "\"":
                    while let q = peek(), q != c {
                        delimiter.unicodeScalars.append(q)
                        index += 1
                    }
                    index += 1
                case "\\":
                    if let q = peek() {
                        delimiter.unicodeScalars.append(q)
                        index += 1
                    }
                default:
                    delimiter.unicodeScalars.append(c)
                }
            }
            if !delimiter.isEmpty {
                pendingHereDocuments.append(HereDocument(delimiter: delimiter, stripsTabs: stripsTabs))
            }
            atCommandStart = false
        }

        /// At the start of a line after a here-document's command: skips each pending body up to its delimiter.
        mutating func readHereDocumentBodies() {
            while !pendingHereDocuments.isEmpty {
                let document = pendingHereDocuments.removeFirst()
                while index < chars.count {
                    var end = index
                    while end < chars.count && chars[end] != "\n" { end += 1 }
                    var line = String(String.UnicodeScalarView(chars[index..<end]))
                    if document.stripsTabs { line = String(line.drop(while: { $0 == "\t" })) }
                    index = min(end + 1, chars.count)
                    if line == document.delimiter { break }
                }
            }
        }
    }
}

extension String {
    /// The text without leading and trailing whitespace-only lines (and trailing blanks on its last line).
    func trimmingBlankLines() -> String {
        var lines = self.split(separator: "\n", omittingEmptySubsequences: false)
        while let first = lines.first, first.allSatisfy(\.isWhitespace) { lines.removeFirst() }
        while let last = lines.last, last.allSatisfy(\.isWhitespace) { lines.removeLast() }
        guard !lines.isEmpty else { return "" }
        var text = lines.joined(separator: "\n")
        while let last = text.unicodeScalars.last, last == " " || last == "\t" || last == "\r" {
            text.unicodeScalars.removeLast()
        }
        return text
    }
}
