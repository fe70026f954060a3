import Foundation
import SandboxServer
import Testing

@Suite struct UnifiedDiffTests {
    let differ = UnifiedDiff(path: "/w/f.txt")

    @Test func equalTextsGiveNothing() {
        #expect(differ.diff(from: "a\nb\n", to: "a\nb\n") == "")
        #expect(differ.diff(from: "", to: "") == "")
    }

    @Test func labelsStripTheLeadingSlash() {
        #expect(differ.diff(from: "a\n", to: "b\n").hasPrefix("--- a/w/f.txt\n+++ b/w/f.txt\n"))
        #expect(UnifiedDiff(path: "rel/x").diff(from: "", to: "x\n").hasPrefix("--- a/rel/x\n+++ b/rel/x\n"))
    }

    @Test func changeInTheMiddleHasThreeLinesOfContext() {
        let old = (1...10).map { "line\($0)\n" }.joined()
        let new = old.replacingOccurrences(of: "line5\n", with: "five\n")
        #expect(
            differ.diff(from: old, to: new) == """
                --- a/w/f.txt
                +++ b/w/f.txt
                @@ -2,7 +2,7 @@
                 line2
                 line3
                 line4
                -line5
                +five
                 line6
                 line7
                 line8

                """
        )
    }

    @Test func insertionAndDeletion() {
        #expect(
            differ.diff(from: "a\nb\nc\n", to: "a\nb\nX\nc\n") == """
                --- a/w/f.txt
                +++ b/w/f.txt
                @@ -1,3 +1,4 @@
                 a
                 b
                +X
                 c

                """
        )
        #expect(
            differ.diff(from: "a\nb\nc\n", to: "a\nc\n") == """
                --- a/w/f.txt
                +++ b/w/f.txt
                @@ -1,3 +1,2 @@
                 a
                -b
                 c

                """
        )
    }

    @Test func emptyFilesOnEitherSide() {
        #expect(
            differ.diff(from: "", to: "x\ny\n") == """
                --- a/w/f.txt
                +++ b/w/f.txt
                @@ -0,0 +1,2 @@
                +x
                +y

                """
        )
        #expect(
            differ.diff(from: "x\n", to: "") == """
                --- a/w/f.txt
                +++ b/w/f.txt
                @@ -1 +0,0 @@
                -x

                """
        )
    }

    @Test func missingTrailingNewlineIsMarked() {
        #expect(
            differ.diff(from: "a\nb", to: "a\nb\n") == """
                --- a/w/f.txt
                +++ b/w/f.txt
                @@ -1,2 +1,2 @@
                 a
                -b
                \\ No newline at end of file
                +b

                """
        )
        #expect(
            differ.diff(from: "a\n", to: "a\nc") == """
                --- a/w/f.txt
                +++ b/w/f.txt
                @@ -1 +1,2 @@
                 a
                +c
                \\ No newline at end of file

                """
        )
    }

    @Test func distantChangesMakeSeparateHunksAndCloseOnesMerge() {
        let old = (1...20).map { "\($0)\n" }.joined()
        var lines = (1...20).map { "\($0)\n" }
        lines[1] = "two\n"
        lines[17] = "eighteen\n"
        let apart = differ.diff(from: old, to: lines.joined())
        #expect(apart.components(separatedBy: "@@ -").count == 3)
        #expect(apart.contains("@@ -1,5 +1,5 @@\n") && apart.contains("@@ -15,6 +15,6 @@\n"))
        var close = (1...20).map { "\($0)\n" }
        close[4] = "five\n"
        close[11] = "twelve\n"  // 6 equal lines apart: one hunk
        #expect(differ.diff(from: old, to: close.joined()).contains("@@ -2,14 +2,14 @@\n"))
    }

    @Test func mixedChangesListDeletionsBeforeInsertions() {
        let diff = differ.diff(from: "a\nb\nc\nd\n", to: "a\nB\nC\nd\n")
        #expect(diff.hasSuffix("@@ -1,4 +1,4 @@\n a\n-b\n-c\n+B\n+C\n d\n"))
    }

    @Test func patchingWithTheDiffGivesTheNewTextOnRandomInputs() {
        var generator = SplitMix(seed: 42)
        for _ in 0..<300 {
            let old = randomText(&generator)
            let new = randomText(&generator)
            let diff = differ.diff(from: old, to: new)
            #expect(apply(diff, to: old) == new, "old: \(old.debugDescription) new: \(new.debugDescription)")
        }
    }

    // MARK: - Helpers

    private func randomText(_ generator: inout SplitMix) -> String {
        let count = Int(generator.next() % 12)
        var text = (0..<count).map { _ in ["a", "b", "c", "d", ""][Int(generator.next() % 5)] + "\n" }.joined()
        if generator.next() % 4 == 0 { text += "z" }
        return text
    }

    /// Applies a unified diff produced by `UnifiedDiff` (hunks in order) to `old`.
    func apply(_ diff: String, to old: String) -> String? {
        if diff.isEmpty { return old }
        let oldLines = splitKeepingNewlines(old)
        var result: [String] = []
        var cursor = 0
        let lines = diff.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        var index = 2
        while index < lines.count {
            let header = lines[index]
            guard header.hasPrefix("@@ -") else { return nil }
            let oldRange = header.dropFirst(4).prefix { $0 != " " }
            let start = Int(oldRange.split(separator: ",")[0])!
            let count = oldRange.contains(",") ? Int(oldRange.split(separator: ",")[1])! : 1
            let first = count == 0 ? start : start - 1
            while cursor < first {
                result.append(oldLines[cursor])
                cursor += 1
            }
            index += 1
            while index < lines.count, !lines[index].hasPrefix("@@") {
                let line = lines[index]
                let noNewline = index + 1 < lines.count && lines[index + 1] == "\\ No newline at end of file"
                let body = String(line.dropFirst()) + (noNewline ? "" : "\n")
                switch line.first {
                case " ":
                    guard oldLines[cursor] == body else { return nil }
                    result.append(body)
                    cursor += 1
                case "-":
                    guard oldLines[cursor] == body else { return nil }
                    cursor += 1
                case "+": result.append(body)
                default: return nil
                }
                index += noNewline ? 2 : 1
            }
        }
        result += oldLines[cursor...]
        return result.joined()
    }

    func splitKeepingNewlines(_ text: String) -> [String] {
        var lines: [String] = []
        var current = ""
        for character in text {
            current.append(character)
            if character == "\n" {
                lines.append(current)
                current = ""
            }
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }
}

/// A small seeded generator so the random cases repeat.
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
