import Testing

@testable import SandboxServer

/// Which newlines separate top-level commands, and the cut of long output.
@Suite struct CommandSplitterTests {
    @Test(arguments: [
        "echo hi",
        "echo 'a\nb'",
        "echo \"a\nb\"",
        "echo $(echo a\necho b)",
        "echo `echo a\necho b`",
        "cat <<EOF\nline\necho not a command\nEOF",
        "cat <<-'END' | wc -l\n\tone\n\ttwo\n\tEND",
        "cat << \"EOF\" > file\n$(not run)\nEOF",
        "echo a \\\n  b",
        "true &&\necho b",
        "false ||\necho b",
        "ls |\nwc -l",
        "{ echo a\necho b; }",
        "( echo a\necho b )",
        "if true; then\n  echo yes\nelse\n  echo no\nfi",
        "if [ -f x ]\nthen\n  echo a\nelif true; then\n  echo b\nfi",
        "for i in 1 2 3\ndo\n  echo $i\ndone",
        "while read line; do\n  echo \"$line\"\ndone < file",
        "until false\ndo break\ndone",
        "case $x in\n  a) echo a;;\n  b|c)\n    echo bc\n    ;;\n  *) echo other;;\nesac",
        "f() {\n  echo in f\n}",
        "function g {\n  echo in g\n}",
        "python3 -c '\nimport sys\nprint(sys.argv)\n'",
        "echo ${x:-\n}",
        "x=$(( 1 +\n 2 ))",
        "# a comment\necho hi",
        "echo hi\n# trailing comment",
        "\n\necho hi\n\n",
        "echo a; echo b",
        "echo 'it''s'\n",
        "cat <<EOF\nif\nEOF",
        "echo done\n",
    ])
    func oneCommand(_ text: String) {
        #expect(CommandSplitter.split(text).count == 1, "\(text)")
    }

    @Test func severalCommandsAreListed() {
        #expect(CommandSplitter.split("echo a\necho b") == ["echo a", "echo b"])
        #expect(CommandSplitter.split("cd /tmp\n\nls -la\n") == ["cd /tmp", "ls -la"])
        #expect(
            CommandSplitter.split("cat <<EOF\nx\nEOF\necho after") == ["cat <<EOF\nx\nEOF", "echo after"]
        )
        #expect(CommandSplitter.split("if true; then echo a; fi\necho b").count == 2)
        #expect(CommandSplitter.split("for i in 1; do echo $i; done\nls").count == 2)
        #expect(CommandSplitter.split("f() { echo a; }\nf").count == 2)
        #expect(CommandSplitter.split("echo 'a\nb'\necho c").count == 2)
        #expect(CommandSplitter.split("sleep 1 &\necho b").count == 2)
        #expect(CommandSplitter.split("echo a >&2\necho b").count == 2)
        #expect(CommandSplitter.split("echo esac\necho done").count == 2)
        #expect(CommandSplitter.hasSeveralCommands("pwd\nls"))
        #expect(!CommandSplitter.hasSeveralCommands("pwd && ls"))
    }

    @Test func blankTextHasNoCommand() {
        #expect(CommandSplitter.split("").isEmpty)
        #expect(CommandSplitter.split("  \n\t\n").isEmpty)
        #expect(CommandSplitter.split("# only a comment\n# and another").isEmpty)
    }

    @Test func shortOutputIsKept() {
        let text = String(repeating: "x", count: 30_000)
        #expect(OutputTruncation.truncate(text) == text)
        #expect(OutputTruncation.truncate("") == "")
    }

    @Test func longOutputKeepsItsStartAndEnd() {
        let text = String(repeating: "a", count: 40_000) + String(repeating: "b", count: 40_000)
        let cut = OutputTruncation.truncate(text)
        #expect(cut.hasPrefix(String(repeating: "a", count: 15_000) + "\n\n[... 50000 characters cut"))
        #expect(cut.hasSuffix("output ...]\n\n" + String(repeating: "b", count: 15_000)))
        #expect(
            OutputTruncation.truncate("0123456789", limit: 4)
                == "01\n\n[... 6 characters cut from the middle of this output ...]\n\n89"
        )
    }

    @Test func thePromptMarkerIsFoundAcrossReads() {
        let marker = PromptMarker(nonce: "n0nce")
        let prompt: [UInt8] =
            marker.begin + Array("3\u{1F}\u{1F}me\u{1F}box\u{1F}/tmp\u{1F}/usr/bin:/bin".utf8) + marker.end
        let bytes = Array("out\n".utf8) + prompt + Array("after".utf8)
        guard case .complete(let output, let fields, let rest) = marker.scan(bytes) else {
            Issue.record("no prompt found")
            return
        }
        #expect(output == Array("out\n".utf8))
        #expect(
            fields
                == PromptMarker.Fields(
                    exitCode: 3,
                    pid: -1,
                    username: "me",
                    hostname: "box",
                    workingDirectory: "/tmp",
                    path: "/usr/bin:/bin"
                )
        )
        #expect(rest == Array("after".utf8))
        // Every split point holds back the start of the prompt, never shows part of it.
        for split in 4..<(4 + prompt.count) {
            guard case .partial(let safe) = marker.scan(Array(bytes[..<split])) else {
                Issue.record("complete at \(split)")
                continue
            }
            #expect(safe == 4 || (split < 4 + 1 && safe <= split))
        }
        // The variable's own text (`$?` unexpanded) is not a prompt.
        let shown = marker.begin + Array("$?\u{1F}$!\u{1F}\\u\u{1F}\\H\u{1F}$PWD\u{1F}$PATH".utf8) + marker.end
        #expect(marker.scan(shown + Array("x".utf8)) == .partial(safeCount: shown.count + 1))
    }

    @Test func controlKeys() {
        #expect(BashSession.controlKey("C-c") == 3)
        #expect(BashSession.controlKey("C-d") == 4)
        #expect(BashSession.controlKey("C-z") == 26)
        #expect(BashSession.controlKey("C-") == nil)
        #expect(BashSession.controlKey("echo C-c") == nil)
    }
}
