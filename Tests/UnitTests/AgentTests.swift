import Agent
import DeckhandCore
import Foundation
import LLM
import Testing

@Suite struct AgentTests {
    private func response(_ content: String?, _ calls: [(String, String, String)]) -> ChatResponse {
        ChatResponse(
            id: "r",
            model: "m",
            content: content,
            toolCalls: calls.map { ToolCall(id: $0.0, name: $0.1, arguments: $0.2) }
        )
    }

    /// Numbers the events from 0 the way the store does.
    private func stored(_ events: [(Event, Int?)]) -> [StoredEvent] {
        events.enumerated().map { index, item in
            var event = item.0
            event.id = index
            return StoredEvent(event: event, step: item.1)
        }
    }

    private func observation(_ type: String, _ content: String, for action: Event, id: Int, exitCode: Int = 0) -> Event
    {
        Event(
            id: nil,
            source: .environment,
            cause: id,
            kind: .observation(type),
            content: content,
            extras: type == "run" ? ["metadata": ["exit_code": .number(Double(exitCode)), "working_dir": "/w"]] : [:],
            toolCallMetadata: action.toolCallMetadata
        )
    }

    // MARK: Responses → actions

    @Test func toolCallsBecomeActionsWithTheThoughtOnTheFirst() throws {
        let planned = ResponseParser.plan(
            response(
                "I will create it.",
                [
                    ("c1", "str_replace_editor", #"{"command":"create","path":"/w/a.txt","file_text":"hi"}"#),
                    ("c2", "execute_bash", #"{"command":"cat /w/a.txt","timeout":30,"is_input":"false"}"#),
                    ("c3", "str_replace_editor", #"{"command":"view","path":"/w/a.txt","view_range":[1,2]}"#),
                    ("c4", "think", #"{"thought":"ok"}"#),
                    ("c5", "finish", #"{"message":"done"}"#),
                ]
            ),
            metrics: LLMMetrics(accumulatedCost: 0.5, promptTokens: 10, completionTokens: 2)
        )
        let events = planned.map(\.event)
        #expect(planned.allSatisfy { if case .action = $0 { true } else { false } })
        #expect(events.map(\.typeName) == ["edit", "run", "read", "think", "finish"])
        #expect(events[0].args["thought"] == "I will create it.")
        #expect(events[1].args["thought"] == "")
        #expect(events[0].args["file_text"] == "hi")
        #expect(events[1].timeout == 30 && events[1].args["blocking"] == true && events[1].args["is_input"] == false)
        #expect(events[2].args["view_range"] == [1, 2])
        #expect(events[4].args["final_thought"] == "done")
        #expect(events.allSatisfy { $0.llmMetrics?.accumulatedCost == 0.5 })
        #expect(events.map { $0.toolCallMetadata?.toolCallID } == ["c1", "c2", "c3", "c4", "c5"])
        #expect(events.allSatisfy { $0.toolCallMetadata?.totalCallsInResponse == 5 })
        #expect(ResponseParser.needsSandbox(events[0]) && !ResponseParser.needsSandbox(events[3]))
        #expect(ResponseParser.localObservation(for: events[3])?.content == "Your thought has been logged.")
    }

    @Test func aReplyWithoutToolCallsWaitsForTheUser() {
        let planned = ResponseParser.plan(response("Which file?", []), metrics: LLMMetrics())
        #expect(planned.count == 1)
        #expect(planned[0].event.action == "message")
        #expect(planned[0].event.args["wait_for_response"] == true)
        #expect(planned[0].event.source == .agent)
    }

    @Test func unknownToolsAndBadArgumentsBecomeErrorObservations() throws {
        let planned = ResponseParser.plan(
            response(
                "hmm",
                [
                    ("c1", "launch_rocket", "{}"),
                    ("c2", "execute_bash", "{not json"),
                    ("c3", "execute_bash", #"{"cmd":"ls"}"#),
                    ("c4", "str_replace_editor", #"{"command":"view","path":"relative.txt"}"#),
                    ("c5", "str_replace_editor", #"{"command":"explode","path":"/a"}"#),
                ]
            ),
            metrics: LLMMetrics()
        )
        for item in planned {
            guard case .invalid(let error) = item else {
                Issue.record("expected an error for \(item)")
                continue
            }
            #expect(error.observation == "error")
            #expect(error.extras["error_id"]?.stringValue == ResponseParser.badActionErrorID)
            #expect(error.toolCallMetadata != nil)
        }
        #expect(planned[0].event.content.contains("no tool named `launch_rocket`"))
        #expect(planned[2].event.content.contains("`command`"))
        // OpenHands' ErrorObservation has error_id only; the call and the text are in the kept response.
        #expect(planned[0].event.extras == ["error_id": .string(ResponseParser.badActionErrorID)])
        let metadata = try #require(planned[1].event.toolCallMetadata)
        #expect(metadata.arguments == "{not json" && !metadata.isFirstCall)
        #expect(planned[0].event.toolCallMetadata?.isFirstCall == true)
        #expect(metadata.responseText == "hmm")
        guard case .array(let choices)? = metadata.modelResponse["choices"] else {
            throw DeckhandError(.protocolViolation, "no choices")
        }
        #expect(choices.count == 1)
    }

    // MARK: History

    @Test func historyPairsToolCallsWithTheirResultsAndDefersAMidStepUserMessage() throws {
        let planned = ResponseParser.plan(
            response(
                "Two things.",
                [("c1", "execute_bash", #"{"command":"echo a"}"#), ("c2", "execute_bash", #"{"command":"echo b"}"#)]
            ),
            metrics: LLMMetrics()
        ).map(\.event)
        let events = stored([
            (Event.system("SYSTEM", tools: CodeActTools.json), nil),
            (Event.userMessage("do it"), nil),
            (Event.stateChanged(.running), nil),
            (planned[0], 1),
            (observation("run", "a", for: planned[0], id: 3), 1),
            (Event.userMessage("also c"), nil),
            (planned[1], 1),
            (observation("run", "b", for: planned[1], id: 6), 1),
            (Event.agentMessage("Done. Anything else?", waitForResponse: true), 2),
        ])
        let messages = HistoryBuilder(observationMaxChars: 1000).messages(from: events)
        #expect(messages.map(\.role) == [.system, .user, .assistant, .tool, .tool, .user, .assistant])
        #expect(messages[0].content == "SYSTEM")
        #expect(messages[2].content == "Two things.")
        #expect(messages[2].toolCalls.map(\.id) == ["c1", "c2"])
        #expect(messages[2].toolCalls[0].arguments == #"{"command":"echo a"}"#)
        #expect(messages[3].toolCallID == "c1")
        #expect(messages[3].content == "a\n[Current working directory: /w]\n[Command finished with exit code 0]")
        #expect(messages[4].toolCallID == "c2")
        #expect(messages[5].content == "also c")
        #expect(messages[6].content == "Done. Anything else?")
    }

    @Test func everyCallIsAnsweredAndBadCallsAreShownWithTheirError() throws {
        let planned = ResponseParser.plan(
            response("Let me try.", [("c1", "nope", #"{"x":1}"#), ("c2", "finish", #"{"message":"bye"}"#)]),
            metrics: LLMMetrics()
        ).map(\.event)
        let events = stored([
            (Event.system("S", tools: []), nil), (Event.userMessage("go"), nil), (planned[0], 1), (planned[1], 1),
            (Event.userMessage("one more thing"), nil),
        ])
        let messages = HistoryBuilder(observationMaxChars: 1000).messages(from: events)
        #expect(messages.map(\.role) == [.system, .user, .assistant, .tool, .tool, .user])
        #expect(messages[2].toolCalls.map(\.name) == ["nope", "finish"])
        #expect(messages[2].toolCalls[0].arguments == #"{"x":1}"#)
        #expect(messages[3].content?.hasPrefix("Error: There is no tool named `nope`") == true)
        #expect(messages[4].content == "The task was marked as finished.")
        #expect(messages[2].content == "Let me try.", "the response's text, kept in the metadata")

        // An event stored before responses were kept has the call and the text in its extras.
        var legacy = planned[0]
        legacy.toolCallMetadata?.modelResponse = ToolCallMetadata.emptyResponse
        legacy.extras["arguments"] = #"{"y":2}"#
        legacy.extras["thought"] = "Earlier."
        let old = HistoryBuilder(observationMaxChars: 1000).messages(
            from: stored([(Event.system("S", tools: []), nil), (Event.userMessage("go"), nil), (legacy, 1)])
        )
        #expect(old[2].toolCalls.first?.arguments == #"{"y":2}"#)
        #expect(old[2].content == "Earlier.")
    }

    @Test func longObservationsAreCutInTheMiddle() {
        let text = String(repeating: "a", count: 600) + String(repeating: "b", count: 600)
        let cut = HistoryBuilder.truncate(text, limit: 200)
        #expect(cut.hasPrefix(String(repeating: "a", count: 100)))
        #expect(cut.hasSuffix(String(repeating: "b", count: 100)))
        #expect(cut.contains("1000 characters cut"))
        #expect(HistoryBuilder.truncate("short", limit: 200) == "short")
    }

    // MARK: Condensation

    private func longConversation(steps: Int) -> [StoredEvent] {
        var items: [(Event, Int?)] = [(Event.system("S", tools: []), nil), (Event.userMessage("task"), nil)]
        for step in 1...steps {
            let action = ResponseParser.plan(
                response(nil, [("c\(step)", "execute_bash", #"{"command":"echo \#(step)"}"#)]),
                metrics: LLMMetrics()
            )[0].event
            items.append((action, step))
            var result = Event(source: .environment, kind: .observation("run"), content: "\(step)")
            result.toolCallMetadata = action.toolCallMetadata
            items.append((result, step))
        }
        var events = stored(items)
        for index in events.indices where events[index].event.observation == "run" {
            events[index].event.cause = events[index].id - 1
        }
        return events
    }

    @Test func condensationKeepsTheEdgesAndNeverSplitsACallFromItsResult() throws {
        let events = longConversation(steps: 10)  // ids 0…21
        let condenser = Condenser(keepFirst: 2, keepRecent: 5)
        let plan = try #require(condenser.plan(events))
        #expect(plan.startID == 2)
        // The last 5 events start with a result (id 17): the recent part starts at the next action instead.
        #expect(plan.endID == 17)
        #expect(plan.newlyForgotten.map(\.id) == Array(2...17))
        var condensed = events
        var record = Condenser.event(plan, summary: "ran echo 1 to 8")
        record.id = 22
        condensed.append(StoredEvent(event: record, step: 11))
        let messages = HistoryBuilder(observationMaxChars: 1000).messages(from: condensed)
        #expect(messages.map(\.role) == [.system, .user, .user, .assistant, .tool, .assistant, .tool])
        #expect(messages[2].content?.contains("ran echo 1 to 8") == true)
        #expect(messages[3].toolCalls.first?.id == "c9")

        // Too little between the kept parts: nothing to do.
        #expect(Condenser(keepFirst: 2, keepRecent: 30).plan(events) == nil)

        // A later condensation starts at the same place and only summarises what is new.
        var longer = longConversation(steps: 14)
        longer.insert(StoredEvent(event: record, step: 11), at: 22)
        let again = try #require(condenser.plan(longer))
        #expect(again.startID == 2)
        #expect(again.previousSummary == "ran echo 1 to 8")
        #expect(again.newlyForgotten.first?.id == 18)
    }

    // MARK: Stuck detection

    @Test func theSameActionAndResultFourTimesIsStuck() {
        var items: [(Event, Int?)] = [(Event.userMessage("go"), nil)]
        for step in 1...4 {
            let action = ResponseParser.plan(
                response("again", [("c\(step)", "execute_bash", #"{"command":"ls"}"#)]),
                metrics: LLMMetrics()
            )[0].event
            items.append((action, step))
            var result = Event(source: .environment, kind: .observation("run"), content: "same")
            result.toolCallMetadata = action.toolCallMetadata
            items.append((result, step))
        }
        let events = stored(items)
        #expect(StuckDetector.reason(Array(events.dropLast(2))) == nil)
        #expect(StuckDetector.reason(events)?.contains("4 times") == true)
        // A user message in between starts the count again.
        var interrupted = events
        interrupted.insert(StoredEvent(event: Event.userMessage("try once more"), step: nil), at: 5)
        #expect(StuckDetector.reason(stored(interrupted.map { ($0.event, $0.step) })) == nil)
    }

    @Test func theSameFailureThreeTimesAndTheSameMessageThreeTimesAreStuck() {
        var items: [(Event, Int?)] = [(Event.userMessage("go"), nil)]
        for step in 1...3 {
            items.append(
                (ResponseParser.plan(response(nil, [("c\(step)", "nope", "{}")]), metrics: LLMMetrics())[0].event, step)
            )
        }
        #expect(StuckDetector.reason(stored(items))?.contains("failed 3 times") == true)

        var chat: [(Event, Int?)] = [(Event.userMessage("go"), nil)]
        for step in 1...3 { chat.append((Event.agentMessage("I cannot.", waitForResponse: false), step)) }
        #expect(StuckDetector.reason(stored(chat))?.contains("same message 3 times") == true)
        chat[2] = (Event.agentMessage("I really cannot.", waitForResponse: false), 2)
        #expect(StuckDetector.reason(stored(chat)) == nil)
    }

    // MARK: Events and replay

    @Test func eventsRoundTripThroughTheirWireForm() throws {
        var event = ResponseParser.plan(
            response("t", [("call_1", "execute_bash", #"{"command":"ls -la","timeout":120}"#)]),
            metrics: LLMMetrics(accumulatedCost: 0.01, promptTokens: 900, completionTokens: 40)
        )[0].event
        event.id = 12
        event.timestamp = Date(timeIntervalSince1970: 1_767_258_001.123)
        let json = event.json
        #expect(json["action"] == "run")
        #expect(json["timestamp"] == "2026-01-01T09:00:01.123000")
        #expect(json["tool_call_metadata"]?["function_name"] == "execute_bash")
        #expect(json["llm_metrics"]?["accumulated_token_usage"]?["prompt_tokens"] == 900)
        #expect(json["timeout"] == 120)
        var back = try Event(json: json)
        #expect(abs(back.timestamp.timeIntervalSince(event.timestamp)) < 0.000_001)
        back.timestamp = event.timestamp
        #expect(back == event)
        #expect(Event.stateChanged(.awaitingUserInput).json["extras"]?["agent_state"] == "awaiting_user_input")
        #expect(Event.stateChanged(.finished).announcedState == .finished)
    }

    @Test func replayTakesTheAgentsActionsInOrder() throws {
        let trajectory: JSONValue = [
            ["id": 0, "source": "agent", "action": "system", "args": ["content": "S"]],
            ["id": 1, "source": "user", "action": "message", "args": ["content": "hi"]],
            ["id": 2, "source": "agent", "action": "run", "args": ["command": "echo hi"], "timeout": 10],
            ["id": 3, "source": "environment", "observation": "run", "content": "hi", "cause": 2],
            ["id": 4, "source": "agent", "action": "finish", "args": ["final_thought": "done"]],
        ]
        let actions = try Replay.actions(from: trajectory)
        #expect(actions.map(\.typeName) == ["run", "finish"])
        #expect(actions[0].id == nil && actions[0].timeout == 10)
        #expect(throws: DeckhandError.self) { try Replay.actions(from: "nope") }
    }
}
