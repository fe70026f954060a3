import DeckhandCore
import DeckhandTesting
import Foundation
import Testing

/// The gateway against its own `/openapi.json`, fuzzed by Schemathesis (`scripts/openapi/`): every operation
/// gets generated valid and invalid requests, and every answer must match the document — no 5xx, no valid
/// request refused, no invalid one accepted, every status, header and body as documented. A client generated
/// from the document can then trust it.
@Suite struct OpenAPIFuzzTests {
    @Test func theGatewayKeepsTheContractItPublishes() async throws {
        let schemathesis = try TestEnvironment.tool("DECKHAND_SCHEMATHESIS", madeBy: "scripts/openapi/venv.sh")
        // A fixed seed makes a failure repeatable; DECKHAND_FUZZ_SEED tries others.
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["DECKHAND_FUZZ_SEED"].flatMap(Int.init) ?? 13
        let examples = environment["DECKHAND_FUZZ_EXAMPLES"].flatMap(Int.init) ?? 10
        try await TestConversations.with { bed in
            let model = bed.scripted([.reply("Hello.")])
            try await running(try bed.makeRuntimeWorker()) {
                try await bed.withGateway { gateway in
                    // One conversation waiting for input, made with a conversation worker that then stops: the
                    // fuzzer's messages are accepted and queued, not answered by a model that has run out of
                    // replies.
                    let id = try await running(bed.makeWorker()) {
                        let id = try await gateway.createConversation("hi", model: model)
                        _ = try await GatewayTests.waitForState(gateway, id, ["awaiting_user_input"])
                        return id
                    }
                    // A file for select-file (schemathesis.toml names it), so that route is fuzzed past its 404.
                    let file = try await bed.workspaceFile(try #require(UUID(uuidString: id)), "fuzz.txt")
                    try Data("fuzzed\n".utf8).write(to: URL(fileURLWithPath: file))
                    let log = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-\(UUID()).log")
                    // Hypothesis writes into its working folder: one of its own, not the clone.
                    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-\(UUID())")
                    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                    defer { try? FileManager.default.removeItem(at: folder) }
                    let scripts = TestEnvironment.repositoryRoot + "/scripts/openapi"
                    let (status, output) = try await TestEnvironment.launchDetached(
                        schemathesis,
                        [
                            "--config-file", scripts + "/schemathesis.toml",
                            "run", gateway.baseURL + "/openapi.json",
                            "--seed", "\(seed)", "--max-examples", "\(examples)",
                            "--no-color",
                        ],
                        environment: [
                            "DECKHAND_FUZZ_KEY": gateway.key, "DECKHAND_FUZZ_CONVERSATION": id,
                            "SCHEMATHESIS_HOOKS": scripts + "/hooks.py",
                        ],
                        directory: folder.path
                    )
                    try? Data(output.utf8).write(to: log)
                    let report =
                        "Schemathesis (seed \(seed)) found the gateway breaking its document; the whole report is in "
                        + "\(log.path):\n\(output.suffix(6000))"
                    #expect(status == 0, "\(report)")
                    #expect(output.contains("passed"), "Schemathesis ran no operation:\n\(output.suffix(2000))")
                }
            }
        }
    }
}
