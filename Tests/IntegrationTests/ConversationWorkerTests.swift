import ConversationWorker
import DeckhandCore
import DeckhandTesting
import Foundation
import LLM
import Testing

/// Conversation workers against real RabbitMQ, PostgreSQL and process sandboxes, with the scripted model.
@Suite struct ConversationWorkerTests {
    @Test func createCatFinishThenAFollowUpInTheSameSandbox() async throws {
        try await TestConversations.with { bed in
            let file = bed.scratch + "/notes.txt"
            let script = FakeLLM.Script(steps: [
                FakeLLM.Step(
                    content: "I will write the file.",
                    toolCalls: [
                        .init(
                            name: "str_replace_editor",
                            arguments: ["command": "create", "path": .string(file), "file_text": "hello deckhand\n"]
                        )
                    ]
                ),
                .bash("cat \(file)"),
                .finish("Wrote and read the file."),
                // The follow-up.
                .bash("echo again >> \(file) && echo $PPID"),
                .reply("Appended. Anything else?"),
            ])
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(script: script, message: "Write notes.txt and show it.")
                let finished = try await bed.waitFor(id, [.finished, .error])
                #expect(finished.agentState == .finished, "\(finished.lastError ?? "")")
                let events = try await bed.events(id)
                #expect(events.map(\.id) == Array(0..<events.count).map { $0 })
                #expect(
                    events.map(\.typeName) == [
                        "system", "message", "agent_state_changed",  // loading
                        "agent_state_changed",  // running
                        "edit", "edit", "run", "run", "finish", "agent_state_changed",
                    ]
                )
                #expect(events[1].args["content"] == "Write notes.txt and show it.")
                #expect(events[2].announcedState == .loading)
                #expect(events[3].announcedState == .running)
                #expect(events[4].args["thought"] == "I will write the file.")
                #expect(events[5].cause == 4 && events[5].observation == "edit")
                #expect(events[7].content.contains("hello deckhand"))
                #expect(events[7].extras["metadata"]?["exit_code"] == 0)
                #expect(events[8].args["final_thought"] == "Wrote and read the file.")
                #expect(events[9].announcedState == .finished)
                #expect(
                    events.filter { $0.action != nil && $0.source == .agent && $0.action != "system" }
                        .allSatisfy { $0.llmMetrics != nil }
                )
                let sandbox = finished.sandboxID
                #expect(sandbox != nil)
                #expect(finished.runtimeStatus == RuntimeStatus.ready.rawValue)
                #expect(finished.iteration == 3)

                // A follow-up message continues the same conversation in the same sandbox.
                try await bed.say("Append a line.", to: id)
                let waiting = try await bed.waitFor(id, [.awaitingUserInput, .error])
                #expect(waiting.agentState == .awaitingUserInput, "\(waiting.lastError ?? "")")
                #expect(waiting.sandboxID == sandbox)
                #expect(try String(contentsOfFile: file, encoding: .utf8) == "hello deckhand\nagain\n")
                let all = try await bed.events(id)
                #expect(all.map(\.id) == Array(0..<all.count).map { $0 })
                #expect(all.last?.announcedState == .awaitingUserInput)
                #expect(all.dropLast().last?.args["content"] == "Appended. Anything else?")
                // The model saw the whole conversation, tool results included, on its last call.
                let last = try #require(bed.llm.requests(model: try await bed.model(of: id)).last)
                #expect(
                    last.messages.map(\.role.rawValue) == [
                        "system", "user", "assistant", "tool", "assistant", "tool", "assistant", "tool", "user",
                        "assistant", "tool",
                    ]
                )
                // Every stored event was published, in order.
                try await eventually { bed.publishedEvents(id).count >= all.count }
                let published = bed.publishedEvents(id).compactMap { $0["id"]?.intValue }
                #expect(published == Array(0..<all.count).map { $0 })
            }
        }
    }
}

/// Polls `condition` until it holds (10 s at most).
func eventually(_ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("the condition did not hold within 10 s")
}
