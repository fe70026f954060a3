import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import RuntimeBackends
import Testing

/// A conversation's sandbox dies under it: the conversation waits, the same sandbox comes back with its
/// files, and the agent goes on.
@Suite struct SandboxRecoveryTests {
    /// The sandbox's server is SIGKILLed while an action runs: that action is reported unreachable, the agent
    /// waits in `loading`, the runtime worker starts the same sandbox again in its workspace, and the next
    /// action finds the file an earlier one wrote.
    @Test func aKilledSandboxServerComesBackWithItsFilesAndTheAgentGoesOn() async throws {
        try await TestConversations.with { bed in
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(
                    script: FakeLLM.Script(steps: [
                        .bash("echo precious > notes.txt"),
                        .bash("touch started.flag; sleep 30"),
                        .bash("cat notes.txt"),
                        .finish("Done."),
                    ])
                )
                let flag = try await bed.workspaceFile(id, "started.flag")
                try await eventually("the long action started", timeout: .seconds(60)) {
                    FileManager.default.fileExists(atPath: flag)
                }
                let before = try #require(try await bed.runtime.store.liveSandbox(conversation: id))
                let folder = try #require(before.reference)
                try await TestRuntime.killSandboxServer(folder: folder)

                let ended = try await bed.waitFor(id, [.finished, .error], timeout: .seconds(120))
                #expect(ended.agentState == .finished, "\(ended.lastError ?? "")")
                let events = try await bed.events(id)
                let trail = events.map {
                    "\($0.id ?? -1) \($0.action ?? $0.observation ?? "") \($0.content.prefix(200))"
                }
                #expect(
                    events.contains { $0.extras["error_id"] == "AGENT_ERROR$SANDBOX_UNREACHABLE" },
                    "\(trail.joined(separator: "\n"))"
                )
                let isCat: (Event) -> Bool = {
                    $0.action == "run" && $0.args["command"]?.stringValue == "cat notes.txt"
                }
                let cat = try #require(events.last(where: isCat))
                let output = try #require(events.first { $0.cause == cat.id })
                #expect(output.content.contains("precious"), "the file survived: \(output.content)")
                let after = try #require(try await bed.runtime.store.liveSandbox(conversation: id))
                #expect(after.id == before.id, "the same sandbox, started again")
            }
        }
    }
    /// The sandbox is removed behind the runtime worker's back while an action runs (its backend no longer has
    /// it): the conversation goes on in a new sandbox, and an event tells the user (and the agent) that the
    /// files are gone.
    @Test func aSandboxThatIsGoneIsReplacedAndTheConversationSaysSo() async throws {
        try await TestConversations.with { bed in
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(
                    script: FakeLLM.Script(steps: [
                        .bash("echo precious > notes.txt"),
                        .bash("touch started.flag; sleep 30"),
                        // Whichever action meets the gone sandbox is answered unreachable; the last one runs in
                        // the new sandbox.
                        .bash("cat notes.txt"),
                        .bash("cat notes.txt"),
                        .finish("Done."),
                    ])
                )
                let flag = try await bed.workspaceFile(id, "started.flag")
                try await eventually("the long action started", timeout: .seconds(60)) {
                    FileManager.default.fileExists(atPath: flag)
                }
                let before = try #require(try await bed.runtime.store.liveSandbox(conversation: id))
                try await bed.runtime.makeBackends([.process])[0].destroy(try #require(before.reference))

                let ended = try await bed.waitFor(id, [.finished, .error], timeout: .seconds(120))
                #expect(ended.agentState == .finished, "\(ended.lastError ?? "")")
                let events = try await bed.events(id)
                let notices = events.filter { $0.extras["error_id"] == "AGENT_ERROR$WORKSPACE_LOST" }
                let trail = events.map {
                    "\($0.id ?? -1) \($0.action ?? $0.observation ?? "") \($0.content.prefix(100))"
                }.joined(separator: "\n")
                #expect(notices.count == 1, "\(trail)")
                let cat = try #require(
                    events.last { $0.action == "run" && $0.args["command"]?.stringValue == "cat notes.txt" }
                )
                #expect(try #require(notices.first?.id) < (cat.id ?? 0), "told before the agent went on: \(trail)")
                let output = try #require(events.first { $0.cause == cat.id })
                #expect(output.content.contains("No such file"), "a new, empty workspace: \(output.content)")
                let after = try #require(try await bed.runtime.store.liveSandbox(conversation: id))
                #expect(after.id != before.id)
                #expect(try await bed.runtime.store.sandbox(id: before.id)?.status == .lost)
            }
        }
    }
}
