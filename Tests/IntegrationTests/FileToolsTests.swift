import DeckhandCore
import DeckhandTesting
import Foundation
import SandboxServer
import Testing

/// The sandbox's file tools and archives on the real file system, each test in its own temporary directory.
@Suite struct FileToolsTests {
    // MARK: - Helpers

    private static func withDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent(TestEnvironment.uniqueName("files"))
            .path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        return try await body(root)
    }

    private static func put(_ text: String, _ path: String) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    private static func contents(_ path: String) throws -> String {
        String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self)
    }

    private static func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! NSNumber).intValue
    }

    /// Runs a command and returns its exit status and standard output.
    @discardableResult
    private static func run(_ arguments: [String], in directory: String? = nil) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    private static func error(_ body: () async throws -> some Any) async -> DeckhandError? {
        do {
            _ = try await body()
            return nil
        } catch let error as DeckhandError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    // MARK: - read

    @Test func readReturnsLineRangesAsTheyAre() async throws {
        try await Self.withDirectory { dir in
            try Self.put("zero\none\ntwo\nthree", dir + "/f.txt")
            let tools = FileTools(workingDirectory: dir)
            #expect(try await tools.read(path: "f.txt") == "zero\none\ntwo\nthree")
            #expect(try await tools.read(path: dir + "/f.txt", start: 1, end: 3) == "one\ntwo\n")
            #expect(try await tools.read(path: "f.txt", start: 2) == "two\nthree")
            #expect(try await tools.read(path: "f.txt", start: 3, end: 99) == "three")
            #expect(try await tools.read(path: "f.txt", start: 9) == "")
        }
    }

    @Test func readOfMissingAndBinaryFilesSaysWhy() async throws {
        try await Self.withDirectory { dir in
            let tools = FileTools(workingDirectory: dir)
            let missing = await Self.error { try await tools.read(path: "nope.txt") }
            #expect(missing?.code == .fileNotFound)
            #expect(missing?.message.contains("\(dir)/nope.txt") == true)
            #expect(missing?.message.contains("does not exist") == true)

            try Data([0x7F, 0x45, 0x4C, 0x46, 0x00, 0x01]).write(to: URL(fileURLWithPath: dir + "/a.out"))
            let binary = await Self.error { try await tools.read(path: "a.out") }
            #expect(binary?.code == .fileIsBinary)
            #expect(binary?.message.contains("binary") == true)
            #expect(binary?.message.contains("cannot be read as text") == true)

            try Data([0x41, 0xFF, 0xFE, 0x42]).write(to: URL(fileURLWithPath: dir + "/latin"))
            #expect(await Self.error { try await tools.view(path: dir + "/latin") }?.code == .fileIsBinary)
        }
    }

    @Test func readOfADirectoryListsTwoLevelsWithoutHiddenEntries() async throws {
        try await Self.withDirectory { dir in
            try Self.put("", dir + "/b.txt")
            try Self.put("", dir + "/a/inner.txt")
            try Self.put("", dir + "/a/deep/deeper.txt")
            try Self.put("", dir + "/a/.secret")
            try Self.put("", dir + "/.git/config")
            try Self.put("", dir + "/.env")
            let tools = FileTools(workingDirectory: dir)
            let expected = """
                Here's the files and directories up to 2 levels deep in \(dir), excluding hidden items:
                \(dir)/
                \(dir)/a/
                \(dir)/a/deep/
                \(dir)/a/inner.txt
                \(dir)/b.txt

                2 hidden files/directories in this directory are excluded. You can use 'ls -la \(dir)' to see them.
                """
            #expect(try await tools.view(path: dir) == expected)
            #expect(try await tools.read(path: ".") == expected)
            let withRange = await Self.error { try await tools.view(path: dir, viewRange: [1, 2]) }
            #expect(withRange?.code == .fileInvalidParameter)
        }
    }

    // MARK: - view

    @Test func viewNumbersLinesLikeCatN() async throws {
        try await Self.withDirectory { dir in
            let path = dir + "/f.py"
            try Self.put("a\nb\nc\nd\n", path)
            let tools = FileTools(workingDirectory: dir)
            #expect(
                try await tools.view(path: path)
                    == "Here's the result of running `cat -n` on \(path):\n     1\ta\n     2\tb\n     3\tc\n     4\td\n"
            )
            #expect(
                try await tools.view(path: path, viewRange: [2, 3])
                    == "Here's the result of running `cat -n` on \(path):\n     2\tb\n     3\tc\n"
            )
            #expect(try await tools.view(path: path, viewRange: [3, -1]).hasSuffix("     3\tc\n     4\td\n"))
            let past = try await tools.view(path: path, viewRange: [4, 10])
            #expect(past.contains("     4\td\n") && past.contains("NOTE:"))

            let zero = await Self.error { try await tools.view(path: path, viewRange: [0, 2]) }
            #expect(zero?.code == .fileInvalidParameter)
            #expect(zero?.message.contains("[1, 4]") == true)
            #expect(
                await Self.error { try await tools.view(path: path, viewRange: [3, 2]) }?.code == .fileInvalidParameter
            )
            #expect(
                await Self.error { try await tools.view(path: path, viewRange: [1]) }?.code == .fileInvalidParameter
            )
            let relative = await Self.error { try await tools.view(path: "f.py") }
            #expect(relative?.message.contains("absolute path") == true)
            #expect(relative?.message.contains("Maybe you meant \(path)?") == true)
        }
    }

    // MARK: - write

    @Test func writeCreatesParentsAndKeepsTheMode() async throws {
        try await Self.withDirectory { dir in
            let tools = FileTools(workingDirectory: dir)
            try await tools.write(path: "new/deep/file.txt", content: "hello\n")
            #expect(try Self.contents(dir + "/new/deep/file.txt") == "hello\n")

            let script = dir + "/run.sh"
            try Self.put("#!/bin/sh\necho old\n", script)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script)
            try await tools.write(path: script, content: "#!/bin/sh\necho new\n")
            #expect(try Self.contents(script) == "#!/bin/sh\necho new\n")
            #expect(try Self.mode(script) == 0o755)
        }
    }

    @Test func writeWithLinesReplacesOnlyThoseLines() async throws {
        try await Self.withDirectory { dir in
            let path = dir + "/f.txt"
            try Self.put("0\n1\n2\n3\n", path)
            let tools = FileTools(workingDirectory: dir)
            try await tools.write(path: path, content: "one\nuno", start: 1, end: 2)
            #expect(try Self.contents(path) == "0\none\nuno\n2\n3\n")
            try await tools.write(path: path, content: "tail\n", start: 3)
            #expect(try Self.contents(path) == "0\none\nuno\ntail\n")
        }
    }

    // MARK: - edit

    @Test func createFailsWhenTheFileExists() async throws {
        try await Self.withDirectory { dir in
            let tools = FileTools(workingDirectory: dir)
            let path = dir + "/src/new.swift"
            let outcome = try await tools.edit(.create(path: path, fileText: "let x = 1\n"))
            #expect(outcome.message == "File created successfully at: \(path)")
            #expect(outcome.prevExist == false && outcome.oldContent == nil && outcome.newContent == "let x = 1\n")
            #expect(outcome.diff.hasPrefix("--- a\(path)\n+++ b\(path)\n@@ -0,0 +1 @@\n+let x = 1\n"))
            #expect(try Self.contents(path) == "let x = 1\n")

            let again = await Self.error { try await tools.edit(.create(path: path, fileText: "other")) }
            #expect(again?.code == .fileExists)
            #expect(again?.message.contains("already exists") == true)
            #expect(try Self.contents(path) == "let x = 1\n")
            let relative = await Self.error { try await tools.edit(.create(path: "x.txt", fileText: "")) }
            #expect(relative?.code == .fileInvalidParameter)
        }
    }

    @Test func strReplaceFailsClearlyOrEditsWithADiff() async throws {
        try await Self.withDirectory { dir in
            let path = dir + "/f.py"
            let text = (1...12).map { "line \($0)\n" }.joined() + "x = 1\nline 14\nx = 1\n"
            try Self.put(text, path)
            let tools = FileTools(workingDirectory: dir)

            let absent = await Self.error {
                try await tools.edit(.strReplace(path: path, oldStr: "y = 2", newStr: "z"))
            }
            #expect(absent?.code == .fileNoUniqueMatch)
            #expect(absent?.message.contains("did not appear verbatim in \(path)") == true)

            let twice = await Self.error {
                try await tools.edit(.strReplace(path: path, oldStr: "x = 1", newStr: "x = 2"))
            }
            #expect(twice?.code == .fileNoUniqueMatch)
            #expect(twice?.message.contains("lines [13, 15]") == true)
            #expect(try Self.contents(path) == text)

            let outcome = try await tools.edit(.strReplace(path: path, oldStr: "line 14\n", newStr: "fourteen\n"))
            #expect(try Self.contents(path) == text.replacingOccurrences(of: "line 14\n", with: "fourteen\n"))
            #expect(outcome.prevExist && outcome.oldContent == text)
            #expect(
                outcome.message == """
                    The file \(path) has been edited. Here's the result of running `cat -n` on a snippet of \(path):
                        11\tline 11
                        12\tline 12
                        13\tx = 1
                        14\tfourteen
                        15\tx = 1
                    Review the changes and make sure they are as expected. Edit the file again if necessary.
                    """
            )
            #expect(
                outcome.diff == """
                    --- a\(path)
                    +++ b\(path)
                    @@ -11,5 +11,5 @@
                     line 11
                     line 12
                     x = 1
                    -line 14
                    +fourteen
                     x = 1

                    """
            )

            _ = try await tools.edit(.strReplace(path: path, oldStr: "line 1\n", newStr: ""))
            #expect(try Self.contents(path).hasPrefix("line 2\n"))
        }
    }

    @Test func insertAddsLinesAfterTheGivenLine() async throws {
        try await Self.withDirectory { dir in
            let path = dir + "/f.txt"
            try Self.put("a\nb", path)
            let tools = FileTools(workingDirectory: dir)
            let top = try await tools.edit(.insert(path: path, insertLine: 0, newStr: "start"))
            #expect(try Self.contents(path) == "start\na\nb")
            #expect(top.message.contains("     1\tstart\n     2\ta\n     3\tb\n"))
            _ = try await tools.edit(.insert(path: path, insertLine: 3, newStr: "end\n"))
            #expect(try Self.contents(path) == "start\na\nb\nend\n")
            let outOfRange = await Self.error { try await tools.edit(.insert(path: path, insertLine: 5, newStr: "x")) }
            #expect(outOfRange?.code == .fileInvalidParameter)
            #expect(outOfRange?.message.contains("[0, 4]") == true)
        }
    }

    @Test func undoEditRestoresEachEarlierContentThenFails() async throws {
        try await Self.withDirectory { dir in
            let path = dir + "/f.txt"
            try Self.put("one\n", path)
            let tools = FileTools(workingDirectory: dir)
            _ = try await tools.edit(.strReplace(path: path, oldStr: "one", newStr: "two"))
            _ = try await tools.edit(.insert(path: path, insertLine: 1, newStr: "three"))
            #expect(try Self.contents(path) == "two\nthree\n")

            let first = try await tools.edit(.undoEdit(path: path))
            #expect(try Self.contents(path) == "two\n")
            #expect(first.message.hasPrefix("Last edit to \(path) undone successfully."))
            #expect(first.diff.contains("-three\n"))
            _ = try await tools.edit(.undoEdit(path: path))
            #expect(try Self.contents(path) == "one\n")
            let none = await Self.error { try await tools.edit(.undoEdit(path: path)) }
            #expect(none?.code == .fileNoHistory)
            #expect(none?.message.contains("No edit history") == true)
        }
    }

    // MARK: - list_files

    @Test func listFilesPutsDirectoriesFirstInCaseInsensitiveOrder() async throws {
        try await Self.withDirectory { dir in
            for file in ["b.txt", "A.txt", "c.TXT", ".hidden", "Zeta/x", "alpha/x", "beta/x"] {
                try Self.put("", dir + "/" + file)
            }
            let tools = FileTools(workingDirectory: dir)
            #expect(
                try await tools.listFiles(path: nil) == [
                    "alpha/", "beta/", "Zeta/", ".hidden", "A.txt", "b.txt", "c.TXT",
                ]
            )
            #expect(try await tools.listFiles(path: "alpha") == ["x"])
            #expect(await Self.error { try await tools.listFiles(path: "missing") }?.code == .fileNotFound)
        }
    }

    // MARK: - Archives

    @Test func zipOfAFileHoldsThatFile() async throws {
        try await Self.withDirectory { dir in
            try Self.put("payload\n", dir + "/one.txt")
            let zip = try Archive.zip(path: dir + "/one.txt")
            try Data(zip).write(to: URL(fileURLWithPath: dir + "/one.zip"))
            let (status, listing) = try Self.run(["unzip", "-l", dir + "/one.zip"])
            #expect(status == 0)
            #expect(listing.contains("one.txt"))
            let extracted = try Archive.extract(zip: zip, into: dir + "/out")
            #expect(extracted == [dir + "/out/one.txt"])
            #expect(try Self.contents(dir + "/out/one.txt") == "payload\n")
        }
    }

    @Test func zipOfATreeRoundTripsAndOpensWithUnzip() async throws {
        try await Self.withDirectory { dir in
            let tree = dir + "/tree"
            try Self.put("top\n", tree + "/top.txt")
            let big = (1...2000).map { "line \($0) of a compressible file\n" }.joined()
            try Self.put(big, tree + "/big.txt")
            try Self.put("#!/bin/sh\n", tree + "/bin/tool.sh")
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: tree + "/bin/tool.sh")
            try Self.put("ü ñ\n", tree + "/src/deep/ünïcode.txt")
            try FileManager.default.createDirectory(atPath: tree + "/empty", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: tree + "/link", withDestinationPath: "top.txt")
            let zip = try Archive.zip(path: tree)
            try Data(zip).write(to: URL(fileURLWithPath: dir + "/tree.zip"))

            let (status, listing) = try Self.run(["unzip", "-l", dir + "/tree.zip"])
            #expect(status == 0)
            for name in ["top.txt", "bin/tool.sh", "src/deep/", "empty/", "link"] {
                #expect(listing.contains(name), "\(name) missing from \(listing)")
            }
            #expect(try Self.run(["unzip", "-tq", dir + "/tree.zip"]).0 == 0)
            try FileManager.default.createDirectory(atPath: dir + "/byunzip", withIntermediateDirectories: true)
            #expect(try Self.run(["unzip", "-q", dir + "/tree.zip", "-d", dir + "/byunzip"]).0 == 0)
            #expect(try Self.contents(dir + "/byunzip/src/deep/ünïcode.txt") == "ü ñ\n")
            #expect(try Self.contents(dir + "/byunzip/big.txt") == big)
            #expect(try Self.run(["unzip", "-v", dir + "/tree.zip"]).1.contains("Defl:N"))
            #expect(zip.count < big.utf8.count / 3)

            let out = dir + "/out"
            _ = try Archive.extract(zip: zip, into: out)
            #expect(try Self.contents(out + "/top.txt") == "top\n")
            #expect(try Self.contents(out + "/big.txt") == big)
            #expect(try Self.contents(out + "/src/deep/ünïcode.txt") == "ü ñ\n")
            #expect(try Self.mode(out + "/bin/tool.sh") == 0o755)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out + "/link") == "top.txt")
            var isDirectory: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: out + "/empty", isDirectory: &isDirectory))
            #expect(isDirectory.boolValue)
        }
    }

    @Test func zipSlipEntriesAreRejectedAndNothingIsExtracted() async throws {
        try await Self.withDirectory { dir in
            let script = """
                import sys, zipfile
                with zipfile.ZipFile(sys.argv[1], 'w') as z:
                    z.writestr('fine.txt', 'ok')
                    z.writestr(sys.argv[2], 'evil')
                """
            for (index, name) in ["../evil", "sub/../../evil", "/tmp/evil-abs"].enumerated() {
                let zipPath = dir + "/slip\(index).zip"
                #expect(try Self.run(["python3", "-c", script, zipPath, name]).0 == 0)
                let destination = dir + "/dest\(index)"
                let error = await Self.error { try Archive.extract(zipAt: zipPath, into: destination) }
                #expect(error?.code == .archiveUnsafeEntry, "\(name)")
                #expect(error?.message.contains(name) == true)
                #expect(!FileManager.default.fileExists(atPath: destination + "/fine.txt"))
                #expect(!FileManager.default.fileExists(atPath: dir + "/evil"))
            }
            // A symlink pointing out of the destination, made by `zip --symlinks`.
            let source = dir + "/linksrc"
            try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: source + "/out", withDestinationPath: "/etc")
            #expect(try Self.run(["zip", "-q", "--symlinks", dir + "/link.zip", "out"], in: source).0 == 0)
            let link = await Self.error { try Archive.extract(zipAt: dir + "/link.zip", into: dir + "/dest-link") }
            #expect(link?.code == .archiveUnsafeEntry)
        }
    }

    @Test func zipsMadeByTheZipCommandExtract() async throws {
        try await Self.withDirectory { dir in
            let source = dir + "/src"
            try Self.put(String(repeating: "compressible text, ", count: 2000) + "\n", source + "/big.txt")
            try Self.put("small\n", source + "/nested/small.txt")
            try Self.put("", source + "/nested/empty.txt")
            var random = [UInt8](repeating: 0, count: 70_000)
            for index in random.indices { random[index] = UInt8(truncatingIfNeeded: (index &* 2_654_435_761) >> 13) }
            try Data(random).write(to: URL(fileURLWithPath: source + "/blob.bin"))
            try FileManager.default.setAttributes(
                [.posixPermissions: 0o700],
                ofItemAtPath: source + "/nested/small.txt"
            )
            #expect(try Self.run(["zip", "-q", "-r", "-9", dir + "/made.zip", "."], in: source).0 == 0)

            let out = dir + "/out"
            let extracted = try Archive.extract(zipAt: dir + "/made.zip", into: out)
            #expect(extracted.contains(out + "/nested/small.txt"))
            #expect(try Self.contents(out + "/big.txt") == (try Self.contents(source + "/big.txt")))
            #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/blob.bin")) == Data(random))
            #expect(try Self.contents(out + "/nested/empty.txt") == "")
            #expect(try Self.mode(out + "/nested/small.txt") == 0o700)

            // Streamed through a pipe, `zip` writes data descriptors and Zip64 fields.
            let (status, _) = try Self.run(["sh", "-c", "zip -q -r - . | cat > \(dir)/streamed.zip"], in: source)
            #expect(status == 0)
            _ = try Archive.extract(zipAt: dir + "/streamed.zip", into: dir + "/out2")
            #expect(try Self.contents(dir + "/out2/nested/small.txt") == "small\n")
        }
    }
}
