/// A line-based unified diff (the `diff -u` format) of two texts, computed with Myers' O(ND) algorithm.
///
/// Lines are compared with their terminators, so a last line without a newline differs from the same line with
/// one; such a line is followed by `\ No newline at end of file`, as GNU diff prints it. Identical texts give an
/// empty string. The output ends with a newline.
public struct UnifiedDiff: Sendable {
    /// The label after `---`, usually `a/<path>`.
    public var oldLabel: String
    /// The label after `+++`, usually `b/<path>`.
    public var newLabel: String
    /// Unchanged lines shown around each change.
    public var context: Int

    /// A diff with explicit labels.
    public init(oldLabel: String, newLabel: String, context: Int = 3) {
        self.oldLabel = oldLabel
        self.newLabel = newLabel
        self.context = max(0, context)
    }

    /// A diff labelled `a/<path>` and `b/<path>` (a leading `/` of an absolute path is not doubled).
    public init(path: String, context: Int = 3) {
        let trimmed = path.hasPrefix("/") ? String(path.dropFirst()) : path
        self.init(oldLabel: "a/" + trimmed, newLabel: "b/" + trimmed, context: context)
    }

    /// The unified diff from `old` to `new`; empty when they are equal.
    public func diff(from old: String, to new: String) -> String {
        let a = Self.lines(of: old)
        let b = Self.lines(of: new)
        let script = Self.editScript(a, b)
        guard script.contains(where: { $0.kind != .equal }) else { return "" }
        var out = "--- \(oldLabel)\n+++ \(newLabel)\n"
        for hunk in hunks(of: script) {
            out += render(hunk, script: script, a: a, b: b)
        }
        return out
    }

    // MARK: - Lines

    /// The lines of `text`, each with its `\n` when it has one; an empty text has no lines.
    static func lines(of text: String) -> [Substring] {
        var result: [Substring] = []
        var start = text.startIndex
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(after: index)
            if text[index] == "\n" {
                result.append(text[start..<next])
                start = next
            }
            index = next
        }
        if start < text.endIndex { result.append(text[start...]) }
        return result
    }

    // MARK: - Edit script

    enum Kind: Equatable { case equal, delete, insert }

    /// One step of the edit script: `oldIndex`/`newIndex` are the positions in each text before the step.
    struct Step: Equatable {
        var kind: Kind
        var oldIndex: Int
        var newIndex: Int
    }

    /// Above this many differences the middle of the texts is shown as one replacement, bounding time and memory.
    static let maximumDifferences = 4000

    /// The shortest edit script from `a` to `b`, with each run of changes as deletions followed by insertions.
    static func editScript(_ a: [Substring], _ b: [Substring]) -> [Step] {
        var prefix = 0
        while prefix < a.count, prefix < b.count, a[prefix] == b[prefix] { prefix += 1 }
        var suffix = 0
        while suffix < a.count - prefix, suffix < b.count - prefix,
            a[a.count - 1 - suffix] == b[b.count - 1 - suffix]
        {
            suffix += 1
        }
        var steps: [Step] = (0..<prefix).map { Step(kind: .equal, oldIndex: $0, newIndex: $0) }
        let midA = Array(a[prefix..<(a.count - suffix)])
        let midB = Array(b[prefix..<(b.count - suffix)])
        let middle =
            myers(midA, midB)
            ?? (midA.indices.map { Step(kind: .delete, oldIndex: $0, newIndex: 0) }
                + midB.indices.map { Step(kind: .insert, oldIndex: midA.count, newIndex: $0) })
        steps += middle.map { Step(kind: $0.kind, oldIndex: $0.oldIndex + prefix, newIndex: $0.newIndex + prefix) }
        for offset in 0..<suffix {
            steps.append(
                Step(kind: .equal, oldIndex: a.count - suffix + offset, newIndex: b.count - suffix + offset)
            )
        }
        return groupChanges(steps)
    }

    /// Myers' greedy algorithm with a saved frontier per round for the walk back; nil past `maximumDifferences`.
    static func myers(_ a: [Substring], _ b: [Substring]) -> [Step]? {
        let n = a.count
        let m = b.count
        if n == 0 && m == 0 { return [] }
        let maxD = min(n + m, maximumDifferences)
        let offset = maxD + 1
        var v = [Int](repeating: 0, count: 2 * maxD + 3)
        var trace: [[Int]] = []
        var found = false
        outer: for d in 0...maxD {
            trace.append(v)
            for k in stride(from: -d, through: d, by: 2) {
                var x: Int
                if k == -d || (k != d && v[offset + k - 1] < v[offset + k + 1]) {
                    x = v[offset + k + 1]
                } else {
                    x = v[offset + k - 1] + 1
                }
                var y = x - k
                while x < n, y < m, a[x] == b[y] {
                    x += 1
                    y += 1
                }
                v[offset + k] = x
                if x >= n && y >= m {
                    found = true
                    break outer
                }
            }
        }
        guard found else { return nil }
        // Walk back from (n, m) through the saved frontiers.
        var steps: [Step] = []
        var x = n
        var y = m
        for d in stride(from: trace.count - 1, through: 0, by: -1) {
            let frontier = trace[d]
            let k = x - y
            let previousK: Int
            if d == 0 {
                previousK = 0
            } else if k == -d || (k != d && frontier[offset + k - 1] < frontier[offset + k + 1]) {
                previousK = k + 1
            } else {
                previousK = k - 1
            }
            let previousX = d == 0 ? 0 : frontier[offset + previousK]
            let previousY = previousX - previousK
            while x > previousX && y > previousY {
                x -= 1
                y -= 1
                steps.append(Step(kind: .equal, oldIndex: x, newIndex: y))
            }
            if d > 0 {
                if x == previousX {
                    y -= 1
                    steps.append(Step(kind: .insert, oldIndex: x, newIndex: y))
                } else {
                    x -= 1
                    steps.append(Step(kind: .delete, oldIndex: x, newIndex: y))
                }
            }
        }
        return steps.reversed()
    }

    /// Reorders each maximal run of changes so its deletions come before its insertions, as `diff -u` prints them.
    static func groupChanges(_ steps: [Step]) -> [Step] {
        var result: [Step] = []
        result.reserveCapacity(steps.count)
        var index = 0
        while index < steps.count {
            if steps[index].kind == .equal {
                result.append(steps[index])
                index += 1
                continue
            }
            var end = index
            while end < steps.count, steps[end].kind != .equal { end += 1 }
            let run = steps[index..<end]
            result += run.filter { $0.kind == .delete }
            result += run.filter { $0.kind == .insert }
            index = end
        }
        return result
    }

    // MARK: - Hunks

    /// Ranges of the script shown as hunks: changes with `context` equal lines around, merged when close.
    func hunks(of script: [Step]) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        let changes = script.indices.filter { script[$0].kind != .equal }
        var index = 0
        while index < changes.count {
            let start = max(0, changes[index] - context)
            var last = changes[index]
            var next = index + 1
            while next < changes.count, changes[next] - last <= 2 * context + 1 {
                last = changes[next]
                next += 1
            }
            ranges.append(start..<min(script.count, last + context + 1))
            index = next
        }
        return ranges
    }

    func render(_ hunk: Range<Int>, script: [Step], a: [Substring], b: [Substring]) -> String {
        let steps = script[hunk]
        let oldCount = steps.filter { $0.kind != .insert }.count
        let newCount = steps.filter { $0.kind != .delete }.count
        let first = steps.first!
        var out = "@@ -\(Self.range(start: first.oldIndex, count: oldCount))"
        out += " +\(Self.range(start: first.newIndex, count: newCount)) @@\n"
        for step in steps {
            let line: Substring
            let marker: String
            switch step.kind {
            case .equal:
                line = a[step.oldIndex]
                marker = " "
            case .delete:
                line = a[step.oldIndex]
                marker = "-"
            case .insert:
                line = b[step.newIndex]
                marker = "+"
            }
            out += marker
            if line.hasSuffix("\n") {
                out += line
            } else {
                out += line + "\n\\ No newline at end of file\n"
            }
        }
        return out
    }

    /// GNU's hunk range: `start,count` 1-based, `start` alone for one line, the line before for none.
    static func range(start: Int, count: Int) -> String {
        switch count {
        case 0: return "\(start),0"
        case 1: return "\(start + 1)"
        default: return "\(start + 1),\(count)"
        }
    }
}
