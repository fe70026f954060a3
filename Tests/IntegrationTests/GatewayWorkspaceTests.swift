import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Gateway
import HTTPClient
import Testing

/// The workspace-file routes: AMQP request/reply from the gateway to the runtime workers, which ask the
/// conversation's sandbox.
@Suite struct GatewayWorkspaceTests {
    @Test func filesAreListedReadUploadedAndZippedThroughTheRuntimeWorkers() async throws {
        try await TestConversations.with { bed in
            let model = bed.scripted([
                .bash("mkdir -p src && printf 'print(1)\\n' > src/main.py && printf '\\x00\\x01\\x02' > blob.bin"),
                .reply("Done."),
            ])
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                try await bed.withGateway { gateway in
                    let id = try await gateway.createConversation("Make files.", model: model)
                    _ = try await GatewayTests.waitForState(gateway, id, ["awaiting_user_input"])
                    let base = "/api/conversations/\(id)"

                    let root = try await gateway.json(.get, "\(base)/list-files")
                    #expect(root == ["src/", "blob.bin"])
                    #expect(try await gateway.json(.get, "\(base)/list-files?path=src") == ["main.py"])
                    #expect(
                        try await gateway.json(.get, "\(base)/select-file?file=src/main.py") == ["code": "print(1)\n"]
                    )
                    let binary = try await gateway.request(.get, "\(base)/select-file?file=blob.bin")
                    #expect(binary.status == 415, "\(binary.text)")
                    let missing = try await gateway.request(.get, "\(base)/select-file?file=nope.txt")
                    #expect(missing.status == 404, "\(missing.text)")
                    #expect(try await gateway.request(.get, "\(base)/select-file").status == 422)

                    let form = MultipartFormData(parts: [
                        .init(name: "files", filename: "a.txt", contentType: "text/plain", body: Array("alpha\n".utf8)),
                        .init(name: "files", filename: "b.txt", contentType: "text/plain", body: Array("beta\n".utf8)),
                    ]).encoded()
                    // Multipart, which the checking client does not send.
                    func upload(into path: String) async throws -> HTTPResponse {
                        try await gateway.http.execute(
                            HTTPRequest(
                                method: .post,
                                url: gateway.baseURL + "\(base)/upload-files?path=\(path)",
                                headers: ["Authorization": "Bearer \(gateway.key)", "Content-Type": form.contentType],
                                body: form.body
                            )
                        )
                    }
                    let uploaded = try await upload(into: "docs")
                    #expect(uploaded.status == 200, "\(uploaded.text)")
                    #expect(
                        try JSONValue(parsing: uploaded.body) == [
                            "uploaded_files": ["a.txt", "b.txt"], "skipped_files": [],
                        ]
                    )
                    #expect(try await gateway.json(.get, "\(base)/list-files?path=docs") == ["a.txt", "b.txt"])
                    #expect(try await gateway.json(.get, "\(base)/select-file?file=docs/b.txt") == ["code": "beta\n"])
                    let notMultipart = try await gateway.request(.post, "\(base)/upload-files", body: "{}")
                    #expect(notMultipart.status == 415)
                    // A part without a file name is refused, not silently dropped (nothing is written).
                    let unnamed = MultipartFormData(parts: [
                        .init(name: "files", filename: "c.txt", contentType: "text/plain", body: Array("c\n".utf8)),
                        .init(name: "files", filename: nil, contentType: "text/plain", body: Array("d\n".utf8)),
                    ]).encoded()
                    let refused = try await gateway.http.execute(
                        HTTPRequest(
                            method: .post,
                            url: gateway.baseURL + "\(base)/upload-files",
                            headers: ["Authorization": "Bearer \(gateway.key)", "Content-Type": unnamed.contentType],
                            body: unnamed.body
                        )
                    )
                    #expect(refused.status == 422, "\(refused.text)")
                    #expect((try? JSONValue(parsing: refused.body))?["code"] == "REQUEST$INVALID_FIELD")
                    #expect(try await gateway.request(.get, "\(base)/select-file?file=c.txt").status == 404)

                    let zip = try await gateway.request(.get, "\(base)/zip-directory")
                    #expect(zip.status == 200)
                    #expect(zip.headers["content-type"] == "application/zip")
                    #expect(zip.body.starts(with: Array("PK".utf8)))
                    #expect(zip.body.count > 100)

                    // Paths that leave the workspace are refused before any sandbox is asked.
                    #expect(
                        try await gateway.json(.get, "\(base)/select-file?file=/workspace/src/main.py")
                            == ["code": "print(1)\n"]
                    )
                    for probe in [
                        "select-file?file=/proc/self/environ", "select-file?file=/etc/shadow",
                        "select-file?file=../../../../etc/passwd", "select-file?file=src/../../x",
                        "zip-directory?path=/home", "zip-directory?path=..", "list-files?path=/root",
                        "list-files?path=/workspace/../etc",
                    ] {
                        let refused = try await gateway.request(.get, "\(base)/\(probe)")
                        #expect(refused.status == 422, "\(probe): \(refused.status) \(refused.text)")
                    }
                    for destination in ["/tmp", "../outside", "/workspace/../etc"] {
                        let escaped = try await upload(into: destination)
                        #expect(escaped.status == 422, "upload into \(destination): \(escaped.status)")
                    }

                    let other = try await APIKeyStore(postgres: bed.runtime.postgres).create(user: "other-\(UUID())")
                        .key
                    for path in ["list-files", "select-file?file=src/main.py", "zip-directory"] {
                        #expect(try await gateway.request(.get, "\(base)/\(path)", key: other).status == 404)
                    }
                }
            }
        }
    }

    @Test func aConversationWithoutASandboxIsA409AndNoWorkerIsA504() async throws {
        try await TestConversations.with { bed in
            let settings = TestConversations.gatewaySettings { $0.filesTimeout = .milliseconds(500) }
            try await bed.withGateway(settings: settings) { gateway in
                // No conversation worker: the conversation never asks for a sandbox.
                let id = try await gateway.createConversation("hi")
                let started = ContinuousClock.now
                let timedOut = try await gateway.request(.get, "/api/conversations/\(id)/list-files")
                #expect(timedOut.status == 504)
                #expect(try JSONValue(parsing: timedOut.body)["code"] == "WORKSPACE$TIMEOUT")
                #expect(ContinuousClock.now - started < .seconds(5))
                try await running(try bed.makeRuntimeWorker()) {
                    // Once the worker consumes (until then the request times out as before).
                    let conflict = try await eventuallyValue("a runtime worker's answer") {
                        let answer = try await gateway.request(.get, "/api/conversations/\(id)/list-files")
                        return answer.status == 504 ? nil : answer
                    }
                    #expect(conflict.status == 409, "\(conflict.text)")
                    #expect(try JSONValue(parsing: conflict.body)["code"] == "SANDBOX$NOT_RUNNING")
                }
            }
        }
    }
}
