import ConversationWorker
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import LLM
import Postgres
import RuntimeManager
import Testing

/// Conversation workers against real RabbitMQ, PostgreSQL and process sandboxes, with the scripted model.
@Suite struct ConversationWorkerTests {
    @Test func createCatFinishThenAFollowUpInTheSameSandbox() async throws {
        try await TestConversations.with { bed in
            let file = "/workspace/notes.txt"
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
                #expect(
                    try String(contentsOfFile: try await bed.workspaceFile(id, "notes.txt"), encoding: .utf8)
                        == "hello deckhand\nagain\n"
                )
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
                try await eventually("every stored event published") { bed.publishedEvents(id).count >= all.count }
                let published = bed.publishedEvents(id).compactMap { $0["id"]?.intValue }
                #expect(published == Array(0..<all.count).map { $0 })
            }
        }
    }
}

@Suite struct ConversationControlTests {
    /// A script of `count` slow shell steps that each append a line to `file`, then `finish`.
    static func slowScript(file: String, count: Int, latency: Int = 250) -> FakeLLM.Script {
        var steps = (0..<count).map { index in
            var step = FakeLLM.Step.bash("echo line-\(index) >> \(file)")
            step.latencyMilliseconds = latency
            return step
        }
        steps.append(.finish("All lines written."))
        return FakeLLM.Script(steps: steps)
    }

    static func lines(_ file: String) -> [String] {
        ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    @Test func pauseResumeAndStopMidRun() async throws {
        try await TestConversations.with { bed in
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(script: Self.slowScript(file: "/workspace/paused.txt", count: 8))
                let file = try await bed.workspaceFile(id, "paused.txt")
                try await bed.waitFor(id, [.running])
                try await eventually("two lines written") { Self.lines(file).count >= 2 }
                try await bed.send(.pause, ConversationTarget(conversationID: id))
                try await bed.waitFor(id, [.paused])
                // The step in flight may finish its action (its observation follows the pause); then the file
                // holds exactly the lines of the commands that ran, and nothing runs until the resume (checked
                // on the events below: no action between `paused` and `running`).
                let whilePaused = try await eventuallyValue("the step in flight ended") { () -> Int? in
                    let events = try await bed.events(id)
                    let commands = events.filter { $0.action == "run" }.count
                    return commands == events.filter { $0.observation == "run" }.count ? commands : nil
                }
                #expect(Self.lines(file).count == whilePaused)
                #expect(whilePaused < 8)

                try await bed.send(.resume, ConversationTarget(conversationID: id))
                let finished = try await bed.waitFor(id, [.finished, .error])
                #expect(finished.agentState == .finished, "\(finished.lastError ?? "")")
                // Every line once, in order: no action ran twice across the pause.
                #expect(Self.lines(file) == (0..<8).map { "line-\($0)" })
                let events = try await bed.events(id)
                #expect(events.compactMap(\.announcedState) == [.loading, .running, .paused, .running, .finished])
                let paused = try #require(events.firstIndex { $0.announcedState == .paused })
                let resumed = try #require(events[paused...].firstIndex { $0.announcedState == .running })
                #expect(!events[paused..<resumed].contains { $0.action != nil }, "no action while paused")

                // Stop mid-run: the agent stops and so does the sandbox.
                let second = try await bed.start(script: Self.slowScript(file: "/workspace/stopped.txt", count: 8))
                let other = try await bed.workspaceFile(second, "stopped.txt")
                try await eventually("a line written") { Self.lines(other).count >= 1 }
                try await bed.send(.stop, ConversationTarget(conversationID: second))
                let stopped = try await bed.waitFor(second, [.stopped])
                #expect(stopped.status == .stopped)
                try await eventually("the sandbox is stopped") {
                    try await bed.runtime.store.liveSandbox(conversation: second)?.status == .stopped
                }
                // Nothing ran after the stop: every command before it has its line, none came after it.
                let afterStop = try await bed.events(second)
                let stop = try #require(afterStop.firstIndex { $0.announcedState == .stopped })
                #expect(!afterStop[stop...].contains { $0.action != nil }, "no action after the stop")
                #expect(Self.lines(other).count == afterStop.filter { $0.observation == "run" }.count)
            }
        }
    }

    @Test func maxIterationsEndsInErrorWithTheReason() async throws {
        try await TestConversations.with { bed in
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(
                    script: Self.slowScript(file: "/workspace/limit.txt", count: 10, latency: 0),
                    maxIterations: 3
                )
                let file = try await bed.workspaceFile(id, "limit.txt")
                let ended = try await bed.waitFor(id, [.error, .finished])
                #expect(ended.agentState == .error)
                #expect(ended.iteration == 3)
                #expect(ended.lastError?.contains("limit of 3 iterations") == true)
                #expect(Self.lines(file).count == 3)
                let events = try await bed.events(id)
                #expect(events.suffix(2).map(\.typeName) == ["error", "agent_state_changed"])
                #expect(events.last?.extras["reason"]?.stringValue?.contains("limit of 3 iterations") == true)
                #expect(bed.llm.requests(model: try await bed.model(of: id)).count == 3)
            }
        }
    }

    @Test func a429StormIsRetriedThenSucceeds() async throws {
        try await TestConversations.with { bed in
            // A script as JSON, the form a test can keep in a file.
            let script = try JSONDecoder().decode(
                FakeLLM.Script.self,
                from: Data(
                    """
                    {"steps": [
                      {"tool_calls": [{"name": "execute_bash", "arguments": {"command": "echo survived"}}],
                       "failures": [{"status": 429, "retry_after": 0.05, "times": 3}, {"status": 503, "times": 1}]},
                      {"tool_calls": [{"name": "finish", "arguments": {"message": "done"}}]}
                    ]}
                    """.utf8
                )
            )
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(script: script)
                let finished = try await bed.waitFor(id, [.finished, .error])
                #expect(finished.agentState == .finished, "\(finished.lastError ?? "")")
                let requests = bed.llm.requests(model: try await bed.model(of: id))
                #expect(requests.map(\.status) == [429, 429, 429, 503, 200, 200])
                #expect(requests.map(\.index) == [0, 0, 0, 0, 0, 1])
                // Every attempt of one step's call carries the step's Idempotency-Key; the next step has its own.
                let keys = requests.map { $0.idempotencyKey ?? "" }
                #expect(Set(keys.prefix(5)).count == 1)
                #expect(keys[0].hasPrefix("deckhand-\(id.uuidString.lowercased())-") && keys[0].hasSuffix("-answer"))
                #expect(keys[5] != keys[0])
                let events = try await bed.events(id)
                #expect(events.contains { $0.observation == "run" && $0.content.contains("survived") })
            }
        }
    }

    @Test func theBudgetEndsTheConversationOnceSpent() async throws {
        try await TestConversations.with { bed in
            // The script's model costs 1 USD per prompt token: the first call spends the whole budget.
            let model = "priced-\(UUID().uuidString.prefix(8).lowercased())"
            let llm = bed.llmSettings {
                $0.prices = PriceTable([model: .init(promptPerMillion: 1_000_000, completionPerMillion: 0)])
            }
            let script = FakeLLM.Script(steps: [.bash("echo one"), .bash("echo two"), .finish("done")])
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker(llm: llm)) {
                let id = try await bed.start(script: script, maxBudget: 0.5, model: model)
                let ended = try await bed.waitFor(id, [.error, .finished])
                #expect(ended.agentState == .error)
                #expect(ended.iteration == 1)
                #expect(ended.metrics.accumulatedCost >= 0.5)
                #expect(ended.lastError?.contains("budget of 0.5 USD") == true)
                // The cost is on the agent's action too.
                let run = try #require(try await bed.events(id).first { $0.action == "run" })
                #expect((run.llmMetrics?.accumulatedCost ?? 0) >= 0.5)
            }
        }
    }

    @Test func aWrongKeyEndsInTheAuthenticationStatusWithoutShowingTheKey() async throws {
        try await TestConversations.with { bed in
            let script = FakeLLM.Script(steps: [.finish("never")], apiKey: "sk-the-right-key")
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(script: script, apiKey: "sk-a-wrong-key-123")
                let ended = try await bed.waitFor(id, [.error, .finished])
                #expect(ended.agentState == .error)
                #expect(ended.runtimeStatus == RuntimeStatus.errorLLMAuthentication.rawValue)
                // Not retried: an authentication failure cannot succeed later.
                #expect(bed.llm.requests(model: try await bed.model(of: id)).count == 1)
                let text = try await bed.events(id).map { $0.json.serialized }.joined()
                #expect(!text.contains("sk-a-wrong-key-123"))
                #expect(!(ended.lastError ?? "").contains("sk-a-wrong-key-123"))
                #expect(ended.lastError?.contains("authentication") == true)
                // At rest the key is sealed with llm.key_secret (the worker opened it to send it).
                let rows = try await bed.runtime.postgres.query(
                    "SELECT llm_api_key FROM conversations WHERE id = $1",
                    [.uuid(id)]
                )
                let stored = try #require(try rows.first?.decode(String?.self, "llm_api_key"))
                #expect(stored.hasPrefix("v1:") && !stored.contains("sk-a-wrong-key"), "\(stored)")
            }
        }
    }

    /// With no model configured (the default provider and no key), a conversation that needs the model ends at
    /// once saying which settings to give, instead of retrying api.openai.com for minutes.
    @Test func noModelConfiguredEndsAtOnceSayingWhatToSet() async throws {
        try await TestConversations.with { bed in
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker(llm: LLMSettings())) {
                let id = try await bed.start(script: FakeLLM.Script(steps: [.finish("never")]))
                let ended = try await bed.waitFor(id, [.error, .finished])
                #expect(ended.agentState == .error)
                #expect(ended.runtimeStatus == RuntimeStatus.errorLLMAuthentication.rawValue)
                #expect(ended.lastError?.contains("llm.api_key") == true, "\(ended.lastError ?? "")")
            }
        }
    }

    @Test func aMessageDuringAStepIsReadByTheNextStepAndStartsNoSecondChain() async throws {
        try await TestConversations.with { bed in
            // The first answer is slow and asks the user a question; the user speaks while it is being written.
            let script = FakeLLM.Script(steps: [
                FakeLLM.Step(content: "Which colour?", latencyMilliseconds: 1500),
                .finish("Painted it."),
            ])
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(script: script, message: "Paint the fence.")
                let model = try await bed.model(of: id)
                // The first request has arrived: its answer is 1.5 s away.
                try await eventually("the model asked") { bed.llm.arrivals(model: model) >= 1 }
                try await bed.say("Blue, please.", to: id)
                let finished = try await bed.waitFor(id, [.finished, .error])
                #expect(finished.agentState == .finished, "\(finished.lastError ?? "")")
                let requests = bed.llm.requests(model: model)
                #expect(requests.map(\.index) == [0, 1])
                #expect(requests[1].messages.contains { $0.role == .user && $0.content == "Blue, please." })
                #expect(!requests[0].messages.contains { $0.content == "Blue, please." })
                // One chain: consecutive steps, one model call each, and only the one `running` change.
                let steps = try await bed.runtime.postgres.query(
                    "SELECT step FROM llm_calls WHERE conversation_id = $1 ORDER BY step",
                    [.uuid(id)]
                ).map { try $0.decode(Int.self, "step") }
                #expect(steps == [1, 2])
                let states = try await bed.events(id).compactMap(\.announcedState)
                #expect(states == [.loading, .running, .finished])
            }
        }
    }

    @Test func malformedArgumentsBecomeAnErrorTheModelSees() async throws {
        try await TestConversations.with { bed in
            let script = FakeLLM.Script(steps: [
                FakeLLM.Step(toolCalls: [.init(name: "execute_bash", arguments: "{\"command\": \"ls")]),
                .finish("Recovered."),
            ])
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(script: script)
                let finished = try await bed.waitFor(id, [.finished, .error])
                #expect(finished.agentState == .finished, "\(finished.lastError ?? "")")
                let events = try await bed.events(id)
                let error = try #require(events.first { $0.observation == "error" })
                #expect(error.content.contains("not a JSON object"))
                let second = try #require(bed.llm.requests(model: try await bed.model(of: id)).last)
                #expect(second.messages.contains { $0.role == .tool && ($0.content ?? "").hasPrefix("Error:") })
            }
        }
    }

    @Test func replayJSONPlaysATrajectoryWithoutAModel() async throws {
        try await TestConversations.with { bed in
            let file = "/workspace/replayed.txt"
            let trajectory: JSONValue = [
                ["id": 0, "source": "user", "action": "message", "args": ["content": "replay me"]],
                ["id": 1, "source": "agent", "action": "run", "args": ["command": .string("echo replayed > \(file)")]],
                ["id": 2, "source": "environment", "observation": "run", "content": "", "cause": 1],
                ["id": 3, "source": "agent", "action": "finish", "args": ["final_thought": "Replayed."]],
            ]
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(script: FakeLLM.Script(steps: []), replay: trajectory)
                let finished = try await bed.waitFor(id, [.finished, .error])
                #expect(finished.agentState == .finished, "\(finished.lastError ?? "")")
                #expect(
                    try String(contentsOfFile: try await bed.workspaceFile(id, "replayed.txt"), encoding: .utf8)
                        == "replayed\n"
                )
                #expect(bed.llm.requests(model: try await bed.model(of: id)).isEmpty)
                let events = try await bed.events(id)
                #expect(events.contains { $0.action == "finish" && $0.args["final_thought"] == "Replayed." })
            }
        }
    }

    @Test func aSandboxThatCannotBeHadEndsInErrorWithTheReason() async throws {
        try await TestConversations.with { bed in
            // The runtime worker has process sandboxes only; this conversation worker asks for Docker.
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker(sandboxBackend: .docker)) {
                let id = try await bed.start(script: FakeLLM.Script(steps: [.finish("never")]))
                let ended = try await bed.waitFor(id, [.error, .finished])
                #expect(ended.agentState == .error)
                #expect(ended.status == .error)
                #expect(ended.runtimeStatus == RuntimeStatus.error.rawValue)
                #expect(ended.lastError?.contains("docker sandbox backend is not enabled") == true)
                let events = try await bed.events(id)
                #expect(events.suffix(2).map(\.typeName) == ["error", "agent_state_changed"])
                #expect(bed.llm.requests(model: try await bed.model(of: id)).isEmpty)
            }
        }
    }

    @Test func aLongHistoryIsCondensedIntoASummary() async throws {
        try await TestConversations.with { bed in
            // Condensation shortens the history the fake counts answers by: it answers in arrival order here.
            let script = FakeLLM.Script(
                steps: (0..<8).map { FakeLLM.Step.bash("echo step \($0)") } + [.finish("done")],
                sequential: true
            )
            let agent = TestConversations.agentSettings {
                $0.condenseAfterTokens = 200
                $0.condenseKeepFirst = 2
                $0.condenseKeepRecent = 4
            }
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker(agent: agent)) {
                let id = try await bed.start(script: script)
                let finished = try await bed.waitFor(id, [.finished, .error])
                #expect(finished.agentState == .finished, "\(finished.lastError ?? "")")
                let requests = bed.llm.requests(model: try await bed.model(of: id))
                #expect(requests.contains { $0.isSummary })
                #expect(requests.filter { !$0.isSummary }.map(\.index) == Array(0...8))
                let events = try await bed.events(id)
                let condensations = events.filter { $0.action == "condensation" }
                #expect(!condensations.isEmpty)
                #expect(condensations.allSatisfy { ($0.args["summary"]?.stringValue ?? "").hasPrefix("Summary:") })
                // The last call saw the summary instead of the forgotten events, and the first events whole.
                let last = try #require(requests.last { !$0.isSummary })
                #expect(last.messages.first?.role == .system)
                #expect(last.messages.contains { ($0.content ?? "").contains("Summary of the earlier part") })
                #expect(last.messages.count < 2 + 2 * 8)
                // Each tool call in the condensed view still has its answer right after it.
                for (index, message) in last.messages.enumerated() where !message.toolCalls.isEmpty {
                    #expect(last.messages[index + 1].toolCallID == message.toolCalls.first?.id)
                }
            }
        }
    }

    @Test func anAgentGoingRoundInCirclesIsStopped() async throws {
        try await TestConversations.with { bed in
            let script = FakeLLM.Script(steps: Array(repeating: .bash("echo same"), count: 10))
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(script: script)
                let ended = try await bed.waitFor(id, [.error, .finished])
                #expect(ended.agentState == .error)
                #expect(ended.lastError?.contains("stuck") == true)
                #expect(ended.iteration == 4)
            }
        }
    }

    @Test func duplicatesChangeNothing() async throws {
        try await TestConversations.with { bed in
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(
                    script: FakeLLM.Script(steps: [.reply("Hello."), .reply("Still here."), .reply("Yes.")])
                )
                try await bed.waitFor(id, [.awaitingUserInput])
                let greeted = try await bed.events(id).count
                // The same message twice (a redelivery, a publisher's retry): one event, one answer.
                try await bed.say("Are you there?", to: id, messageID: "same-message")
                try await bed.say("Are you there?", to: id, messageID: "same-message")
                let model = try await bed.model(of: id)
                try await eventually("the second answer") {
                    let last = try await bed.events(id).last
                    return last?.announcedState == .awaitingUserInput && bed.llm.requests(model: model).count == 2
                }
                // An old step delivered again is acknowledged without effect. A message sent after the old steps
                // is the sentinel: once it is answered, the old steps (cheaper, and delivered before it) were
                // taken, and all that changed is one more exchange of the same shape as the first.
                let before = try await bed.events(id).count
                try await bed.send(.step, StepCommand(conversationID: id, step: 1))
                try await bed.send(.step, StepCommand(conversationID: id, step: 2))
                try await bed.say("Sure?", to: id, messageID: "sentinel")
                try await eventually("the sentinel's answer") {
                    let last = try await bed.events(id).last
                    return last?.announcedState == .awaitingUserInput && bed.llm.requests(model: model).count == 3
                }
                let events = try await bed.events(id)
                #expect(events.count - before == before - greeted, "the sentinel's exchange and nothing else")
                #expect(events.filter(\.isUserMessage).count == 3)
                #expect(bed.llm.requests(model: model).count == 3)
            }
        }
    }
}
