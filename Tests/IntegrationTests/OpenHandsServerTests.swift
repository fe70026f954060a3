import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Testing

/// OpenHands' own action-execution server (openhands-ai 0.62.0, in the image scripts/openhands/runtime-image.sh
/// builds) behind `deckhand runtime-api`, which runs the image as given on Docker, driven by Deckhand's
/// conversation worker through the `remote` backend: a Deckhand that takes its sandboxes from a provider of
/// OpenHands' runtime images.
@Suite struct OpenHandsServerTests {
    /// The image (`DECKHAND_OPENHANDS_RUNTIME_IMAGE`, set by scripts/test.sh); failing, never skipping, without it.
    static func image() throws -> String {
        guard let image = ProcessInfo.processInfo.environment["DECKHAND_OPENHANDS_RUNTIME_IMAGE"], !image.isEmpty
        else {
            throw DeckhandError(
                .unavailable,
                "DECKHAND_OPENHANDS_RUNTIME_IMAGE is not set: build the image with scripts/openhands/runtime-image.sh "
                    + "(scripts/test.sh does) and export what it prints"
            )
        }
        return image
    }

    /// The start command OpenHands' `RemoteRuntime` sends for its action-execution server, without its plugins
    /// (Jupyter and VS Code are not in the image) and without the browser.
    static let command = [
        "python", "-u", "-m", "openhands.runtime.action_execution_server", "60000", "--working-dir", "/workspace",
        "--username", "root", "--user-id", "0", "--no-enable-browser",
    ]

    @Test func aConversationRunsOnOpenHandsOwnServer() async throws {
        let image = try Self.image()
        // OpenHands' server imports for half a minute and holds about 450 MB once up.
        var docker = TestRuntime.dockerSettings
        docker.memoryBytes = 2 << 30
        var api = RuntimeAPISettings()
        api.imageMap = [.init(image, .asGiven(port: RuntimeAPISettings.ImageRule.openHandsPort))]
        try await RuntimeAPITests.withRuntimeAPI(
            backends: [.docker],
            worker: TestRuntime.settings { $0.aliveTimeout = .seconds(180) },
            docker: docker,
            api: api
        ) { provider, port in
            var remote = RemoteSettings()
            remote.url = "http://127.0.0.1:\(port)"
            remote.apiKey = try await APIKeyStore(postgres: provider.postgres)
                .create(user: "deckhand-on-openhands", scope: .runtimeAPI).key
            remote.image = image
            remote.command = Self.command
            try await RemoteBackendTests.withRemoteConversations(remote) { bed in
                let id = try await bed.start(
                    script: FakeLLM.Script(steps: [
                        .bash("echo from-openhands > /workspace/o.txt && cat /workspace/o.txt"),
                        .init(toolCalls: [
                            .init(
                                name: "str_replace_editor",
                                arguments: ["command": "view", "path": "/workspace/o.txt"]
                            )
                        ]),
                        .bash("ls /nonexistent"),
                        .finish("Done."),
                    ])
                )
                try await bed.waitFor(id, [.finished], timeout: .seconds(300))
                let events = try await bed.events(id)
                let runs = events.filter { $0.observation == "run" }
                #expect(runs.count == 2, "\(events.map(\.json))")
                #expect(runs.first?.content.contains("from-openhands") == true, "\(runs.map(\.json))")
                #expect(runs.first?.json["extras"]?["metadata"]?["exit_code"] == 0)
                #expect(runs.last?.json["extras"]?["metadata"]?["exit_code"] == 2)
                let read = events.first { $0.observation == "read" }
                #expect(read?.content.contains("from-openhands") == true, "\(String(describing: read?.json))")
                #expect(!events.contains { $0.observation == "error" }, "\(events.map(\.json))")
                let sandbox = try #require(try await bed.runtime.store.liveSandbox(conversation: id))
                #expect(sandbox.backend == .remote)
                // The provider ran the image as given: its runtime's container is OpenHands' image.
                let served = try await provider.store.all().filter { $0.status == .running }
                #expect(served.map(\.image) == [image])
            }
        }
    }

    /// OpenHands' own client of the Runtime API (`RemoteRuntime` of openhands-ai 0.62.0, run by
    /// scripts/openhands/remote_runtime_client.py in the image's Python on the host network) against
    /// `deckhand runtime-api`: it starts a runtime for one of OpenHands' published images (served by Deckhand's
    /// sandbox server), waits for it the way it does, runs its first commands and actions through the
    /// action-execution protocol, pauses it on close, resumes it on connecting again with the workspace, and stops it.
    @Test func openHandsRemoteRuntimeDrivesDeckhandsRuntimeAPI() async throws {
        let image = try Self.image()
        try await RuntimeAPITests.withRuntimeAPI { runtime, port in
            let keys = APIKeyStore(postgres: runtime.postgres)
            let key = try await keys.create(user: "openhands", scope: .runtimeAPI).key
            let client = try String(
                contentsOfFile: TestEnvironment.repositoryRoot + "/scripts/openhands/remote_runtime_client.py",
                encoding: .utf8
            )
            let session = "oh-\(UUID().uuidString.lowercased())"
            let docker = TestDocker(client: runtime.http)
            let container = try await docker.run(
                image: image,
                name: "deckhand-test-remote-runtime-\(session)",
                arguments: ["python", "-u", "-c", client, "http://127.0.0.1:\(port)", session],
                environment: ["SANDBOX_API_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LOG_LEVEL": "info"]
            )
            let finished: Result<(output: String, exitCode: Int?), any Error>
            do {
                try await eventually("OpenHands' client is done", timeout: .seconds(300)) {
                    try await docker.inspect(container)["State"]?["Running"] == false
                }
                let exitCode = try await docker.inspect(container)["State"]?["ExitCode"]?.intValue
                finished = .success((try await docker.logs(container), exitCode))
            } catch {
                finished = .failure(error)
            }
            try? await docker.remove(container)
            let (output, exitCode) = try finished.get()
            #expect(exitCode == 0, "\(output.suffix(4000))")
            let report = try #require(
                output.split(separator: "\n").reversed().lazy.compactMap { try? JSONValue(parsing: String($0)) }
                    .first { $0["first"] != nil },
                "no report: \(output.suffix(4000))"
            )
            let runtimeID = try #require(report["first"]?["runtime_id"]?.stringValue)
            #expect(report["second"]?["runtime_id"]?.stringValue == runtimeID, "one runtime, resumed: \(report)")
            #expect(report["run"]?["type"] == "CmdOutputObservation", "\(report)")
            #expect(report["run"]?["content"]?.stringValue?.contains("kept") == true, "\(report)")
            #expect(report["run"]?["exit_code"] == 0)
            #expect(report["failing"]?["exit_code"] == 2, "\(report)")
            #expect(report["write"]?["type"] == "FileWriteObservation", "\(report)")
            #expect(report["read"]?["type"] == "FileReadObservation", "\(report)")
            #expect(report["read"]?["content"]?.stringValue == "written\n", "\(report)")
            // Its first commands (environment and git's configuration) ran in the sandbox's shell.
            #expect(report["env"]?["content"]?.stringValue?.contains("git=openhands") == true, "\(report)")
            #expect(report["after_pause"] == "paused", "\(report)")
            #expect(report["after_resume"]?["content"]?.stringValue?.contains("kept") == true, "\(report)")
            #expect(report["after_stop"] == "stopped", "\(report)")
            #expect(!output.contains(key), "the API key is never in what the client printed")
        }
    }
}
