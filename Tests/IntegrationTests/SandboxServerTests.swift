import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Logging
import SandboxServer
import Synchronization
import Testing

/// PROTOCOL.md §C over real HTTP: every endpoint, auth, bad input, uploads and downloads.
@Suite struct SandboxServerTests {
    @Test func openRoutesAnswerAndEveryOtherRouteNeedsTheKey() async throws {
        try await TestSandbox.with { server in
            #expect(try await server.request(.get, "/alive", key: .some(nil)).text == #"{"status":"ok"}"#)
            let info = try await server.request(.get, "/server_info", key: .some(nil)).decode(JSONValue.self)
            #expect(info["uptime"]?.doubleValue != nil)
            #expect(info["idle_time"]?.doubleValue != nil)
            #expect((info["resources"]?["memory"]?["rss"]?.doubleValue ?? 0) > 0)
            #expect(info["resources"]?["disk"]?["total"]?.doubleValue != nil)
            #expect(info["resources"]?["cpu_percent"]?.doubleValue != nil)

            for key: String? in [nil, "wrong-key"] {
                let routes: [(HTTPRequest.Method, String)] = [
                    (.post, "/execute_action"), (.post, "/list_files"), (.post, "/upload_file?destination=/tmp"),
                    (.get, "/download_files?path=/tmp"),
                ]
                for (method, path) in routes {
                    let response = try await server.request(method, path, json: [:], key: .some(key))
                    #expect(response.status == 403, "\(method) \(path)")
                    #expect(response.text == #"{"detail":"Invalid API Key"}"#)
                }
            }
        }
    }

    /// Each action is one line of the sandbox's log, in the trace of the step that sent it: the trace id of
    /// its `traceparent`, its action id, its status and how long it took.
    @Test func eachActionIsLoggedInTheTraceThatSentIt() async throws {
        let logs = CapturedLogs()
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        try await TestSandbox.with(logger: Logger(label: "test.sandbox") { _ in logs }) { server in
            let action: JSONValue = ["action": ["action": "run", "args": ["command": "echo traced"]]]
            var request = HTTPRequest(
                method: .post,
                url: server.base + "/execute_action",
                body: Array(try JSONEncoder().encode(action))
            )
            request.headers.replaceOrAdd(name: "X-Session-API-Key", value: server.key)
            request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
            request.headers.replaceOrAdd(name: "traceparent", value: "00-\(trace)-00f067aa0ba902b7-01")
            request.headers.replaceOrAdd(name: "X-Deckhand-Action-ID", value: "step-7")
            #expect(try await server.client.execute(request).text.contains("traced"))
        }
        let lines = logs.store.lines.withLock { $0 }.filter { $0.contains("action answered") }
        #expect(lines.count == 1, "\(lines)")
        #expect(lines.first?.contains("trace.id=\(trace)") == true, "\(lines)")
        #expect(lines.first?.contains("sandbox.action.id=step-7") == true)
        #expect(lines.first?.contains("sandbox.action.status=200") == true)
    }

    /// An action named by `X-Deckhand-Action-ID` runs once: a repeat — sent while it still runs, or after —
    /// gets the same observation; a caller that hangs up does not stop the run; another id runs anew; a
    /// request without an id runs as before.
    @Test func aNamedActionRunsOnceAndARepeatCollectsItsObservation() async throws {
        try await TestSandbox.with { server in
            func send(_ command: String, id: String?, timeout: Duration = .seconds(60)) async throws -> HTTPResponse {
                var headers: HTTPHeaders = [:]
                if let id { headers.add(name: "X-Deckhand-Action-ID", value: id) }
                let action: JSONValue = ["action": ["action": "run", "args": ["command": .string(command)]]]
                var request = HTTPRequest(
                    method: .post,
                    url: server.base + "/execute_action",
                    headers: headers,
                    body: Array(try JSONEncoder().encode(action))
                )
                request.headers.replaceOrAdd(name: "X-Session-API-Key", value: server.key)
                request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
                request.timeout = timeout
                return try await server.client.execute(request)
            }
            let log = server.workspace + "/runs.log"
            let command = "touch started.flag; sleep 1; echo ran >> runs.log; echo done"
            // The first caller gives up mid-run (as a killed worker would); two repeats arrive meanwhile.
            async let abandoned = try? send(command, id: "c/1", timeout: .milliseconds(300))
            let started = server.workspace + "/started.flag"
            try await eventually("the first request's run started") { FileManager.default.fileExists(atPath: started) }
            async let repeated = send(command, id: "c/1")
            async let again = send(command, id: "c/1")
            let (first, second) = try await (repeated, again)
            _ = await abandoned
            #expect(first.status == 200)
            #expect(first.text == second.text)
            #expect(try first.decode(JSONValue.self)["content"] == "done")
            #expect(try String(contentsOfFile: log, encoding: .utf8) == "ran\n")

            let later = try await send(command, id: "c/1")
            #expect(later.text == first.text, "collected after the run, not run again")
            #expect(try String(contentsOfFile: log, encoding: .utf8) == "ran\n")

            _ = try await send("echo ran >> runs.log", id: "c/2")
            _ = try await send("echo ran >> runs.log", id: nil)
            _ = try await send("echo ran >> runs.log", id: nil)
            #expect(try String(contentsOfFile: log, encoding: .utf8) == "ran\nran\nran\nran\n")

            let tooLong = try await send("true", id: String(repeating: "x", count: 201))
            #expect(tooLong.status == 400)
        }
    }

    @Test func aRunObservationHasOpenHandsFields() async throws {
        try await TestSandbox.with { server in
            let observation = try await server.run("echo hi; echo oops >&2")
            #expect(observation["observation"] == "run")
            #expect(observation["content"] == "hi\noops")
            #expect(observation["success"] == true)
            #expect(observation["extras"]?["command"] == "echo hi; echo oops >&2")
            #expect(observation["extras"]?["hidden"] == false)
            let metadata = try #require(observation["extras"]?["metadata"])
            #expect(metadata["exit_code"] == 0)
            #expect(metadata["working_dir"]?.stringValue == server.workspace)
            #expect(metadata["username"]?.stringValue?.isEmpty == false)
            #expect(metadata["hostname"]?.stringValue?.isEmpty == false)
            #expect(metadata["pid"] != nil)
            #expect(metadata["prefix"] != nil)
            #expect(metadata["suffix"]?.stringValue?.contains("exit code 0") == true)

            let failing = try await server.run("ls /definitely-missing")
            #expect(failing["success"] == false)
            #expect(failing["extras"]?["metadata"]?["exit_code"] == 2)

            // The top-level timeout is a hard limit.
            let started = ContinuousClock.now
            let slow = try await server.execute(
                ["action": "run", "args": ["command": "sleep 30", "blocking": true], "timeout": 1]
            ).body
            #expect(slow["extras"]?["metadata"]?["exit_code"] == -1)
            #expect(ContinuousClock.now - started < .seconds(5))
            let interrupted = try await server.run("C-c")
            #expect(interrupted["extras"]?["metadata"]?["exit_code"] == 130)
        }
    }

    @Test func badRequestsAre400sAndModelMistakesAreErrorObservations() async throws {
        try await TestSandbox.with { server in
            let malformed = try await server.request(.post, "/execute_action", body: Array("{nope".utf8))
            #expect(malformed.status == 400)
            #expect(try malformed.decode(JSONValue.self)["detail"]?.stringValue?.contains("not valid JSON") == true)

            let unknown = try await server.execute(["action": "message", "args": ["content": "hi"]])
            #expect(unknown.status == 400)
            #expect(unknown.body["detail"]?.stringValue?.contains("unknown action type `message`") == true)

            let missing = try await server.execute(["action": "run", "args": [:]])
            #expect(missing.status == 400)

            let several = try await server.execute(["action": "run", "args": ["command": "echo a\necho b"]])
            #expect(several.status == 200)
            #expect(several.body["observation"] == "error")
            #expect(several.body["content"]?.stringValue?.contains("echo b") == true)

            let missingFile = try await server.execute(["action": "read", "args": ["path": "/definitely/missing.txt"]])
            #expect(missingFile.body["observation"] == "error")
            #expect(missingFile.body["content"]?.stringValue?.contains("/definitely/missing.txt") == true)
        }
    }

    @Test func fileActionsRoundTrip() async throws {
        try await TestSandbox.with { server in
            let path = server.workspace + "/src/notes.txt"
            let written = try await server.execute([
                "action": "write", "args": ["path": .string(path), "content": "one\ntwo\nthree\n"],
            ])
            #expect(written.body["observation"] == "write")
            let read = try await server.execute([
                "action": "read", "args": ["path": .string(path), "start": 1, "end": 2],
            ])
            #expect(read.body["observation"] == "read")
            #expect(read.body["content"] == "two\n")
            let view = try await server.execute([
                "action": "read", "args": ["path": .string(path), "impl_source": "oh_aci"],
            ])
            #expect(view.body["content"]?.stringValue?.contains("     1\tone") == true)

            let edited = try await server.execute([
                "action": "edit",
                "args": ["path": .string(path), "command": "str_replace", "old_str": "two", "new_str": "TWO"],
            ])
            #expect(edited.body["observation"] == "edit")
            #expect(edited.body["extras"]?["diff"]?.stringValue?.contains("-two\n+TWO") == true)
            #expect(edited.body["extras"]?["prev_exist"] == true)
            #expect(try String(contentsOfFile: path, encoding: .utf8) == "one\nTWO\nthree\n")

            try "x\ny\nx\n".write(toFile: server.workspace + "/dup.txt", atomically: true, encoding: .utf8)
            let ambiguous = try await server.execute([
                "action": "edit",
                "args": [
                    "path": .string(server.workspace + "/dup.txt"), "command": "str_replace", "old_str": "x",
                    "new_str": "z",
                ],
            ])
            #expect(ambiguous.body["observation"] == "error")
            #expect(ambiguous.body["content"]?.stringValue?.contains("1") == true)
            #expect(ambiguous.body["content"]?.stringValue?.contains("3") == true)

            let undo = try await server.execute([
                "action": "edit", "args": ["path": .string(path), "command": "undo_edit"],
            ])
            #expect(undo.body["observation"] == "edit")
            #expect(try String(contentsOfFile: path, encoding: .utf8) == "one\ntwo\nthree\n")
        }
    }

    @Test func listFilesPutsDirectoriesFirst() async throws {
        try await TestSandbox.with { server in
            for name in ["b.txt", "A.txt"] {
                _ = FileManager.default.createFile(atPath: server.workspace + "/" + name, contents: nil)
            }
            for name in ["zeta", "Alpha"] {
                try FileManager.default.createDirectory(
                    atPath: server.workspace + "/" + name,
                    withIntermediateDirectories: true
                )
            }
            let listed = try await server.request(.post, "/list_files", json: ["path": .string(server.workspace)])
            #expect(try listed.decode([String].self) == ["Alpha/", "zeta/", "A.txt", "b.txt"])
            let defaulted = try await server.request(.post, "/list_files", json: [:])
            #expect(try defaulted.decode([String].self) == ["Alpha/", "zeta/", "A.txt", "b.txt"])
        }
    }

    @Test func uploadsAreStoredOrExtractedAndZipSlipIsRejected() async throws {
        let smallUploads: (inout SandboxConfiguration) -> Void = { $0.maxUploadBytes = 64 * 1024 }
        try await TestSandbox.with(configure: smallUploads) { server in
            let destination = server.workspace + "/uploads"
            let plain = try await upload(
                server,
                name: "hello.txt",
                bytes: Array("hello".utf8),
                destination: destination
            )
            #expect(plain.status == 200)
            #expect(
                try plain.decode(JSONValue.self) == [
                    "filename": "hello.txt", "destination": .string(destination), "recursive": false,
                ]
            )
            #expect(try String(contentsOfFile: destination + "/hello.txt", encoding: .utf8) == "hello")

            let tree = server.workspace + "/tree"
            try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
            try "deep".write(toFile: tree + "/sub/deep.txt", atomically: true, encoding: .utf8)
            let zip = try Archive.zip(path: tree)
            let extracted = try await upload(
                server,
                name: "tree.zip",
                bytes: zip,
                destination: destination + "/unzipped"
            )
            #expect(extracted.status == 200)
            #expect(try String(contentsOfFile: destination + "/unzipped/sub/deep.txt", encoding: .utf8) == "deep")

            let evil = try #require(try zipSlipArchive())
            let rejected = try await upload(server, name: "evil.zip", bytes: evil, destination: destination + "/evil")
            #expect(rejected.status == 400)
            #expect(!FileManager.default.fileExists(atPath: destination + "/escaped.txt"))
            #expect(!FileManager.default.fileExists(atPath: server.workspace + "/escaped.txt"))

            let big = try await upload(
                server,
                name: "big.bin",
                bytes: Array(repeating: 7, count: 100 * 1024),
                destination: destination
            )
            #expect(big.status == 413)
            #expect(!FileManager.default.fileExists(atPath: destination + "/big.bin"))

            let noDestination = try await server.request(.post, "/upload_file", body: [])
            #expect(noDestination.status == 400)
        }
    }

    @Test func downloadsAreZipsOfAFileOrATree() async throws {
        try await TestSandbox.with { server in
            try FileManager.default.createDirectory(
                atPath: server.workspace + "/d/e",
                withIntermediateDirectories: true
            )
            try "file".write(toFile: server.workspace + "/d/e/f.txt", atomically: true, encoding: .utf8)
            let tree = try await server.request(.get, "/download_files?path=\(server.workspace)/d")
            #expect(tree.status == 200)
            #expect(tree.headers["content-type"] == "application/zip")
            let treeOut = server.workspace + "/out-tree"
            let paths = try Archive.extract(zip: tree.body, into: treeOut)
            #expect(!paths.isEmpty)
            #expect(try String(contentsOfFile: treeOut + "/e/f.txt", encoding: .utf8) == "file")

            let single = try await server.request(.get, "/download_files?path=\(server.workspace)/d/e/f.txt")
            let singleOut = server.workspace + "/out-single"
            _ = try Archive.extract(zip: single.body, into: singleOut)
            #expect(try String(contentsOfFile: singleOut + "/f.txt", encoding: .utf8) == "file")

            let missing = try await server.request(.get, "/download_files?path=/definitely/missing")
            #expect(missing.status == 404)
        }
    }

    @Test func browseReadsAPageAndReportsFailuresAsObservations() async throws {
        try await withLoopbackServer { port in
            try await TestSandbox.with { server in
                let page = try await server.execute([
                    "action": "browse", "args": ["url": .string("http://127.0.0.1:\(port)/hello")],
                ])
                #expect(page.body["observation"] == "browse")
                #expect(page.body["extras"]?["error"] == false)
                #expect(page.body["content"]?.stringValue?.contains("Hello, world!") == true)
                let missing = try await server.execute([
                    "action": "browse", "args": ["url": .string("http://127.0.0.1:\(port)/status/404")],
                ])
                #expect(missing.status == 200)
                #expect(missing.body["extras"]?["error"] == true)
                #expect(missing.body["content"]?.stringValue?.contains("404") == true)
            }
        }
    }

    private func upload(
        _ server: TestSandbox.Server,
        name: String,
        bytes: [UInt8],
        destination: String
    ) async throws
        -> HTTPResponse
    {
        let boundary = "deckhand-\(UUID().uuidString)"
        var body = Array(
            "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(name)\"\r\n".utf8
        )
        body +=
            Array("Content-Type: application/octet-stream\r\n\r\n".utf8) + bytes + Array("\r\n--\(boundary)--\r\n".utf8)
        return try await server.request(
            .post,
            "/upload_file?destination=\(destination)",
            body: body,
            headers: ["Content-Type": "multipart/form-data; boundary=\(boundary)"]
        )
    }

    /// A zip whose one entry is `../escaped.txt`, made by Python's zipfile.
    private func zipSlipArchive() throws -> [UInt8]? {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(UUID().uuidString).zip").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try TestEnvironment.run(
            "/usr/bin/env",
            "python3",
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').writestr('../escaped.txt', 'gotcha')",
            path
        )
        return FileManager.default.contents(atPath: path).map(Array.init)
    }
}
