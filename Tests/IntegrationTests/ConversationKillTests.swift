import Agent
import ConversationWorker
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Postgres
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The conversation workers as processes, killed and stopped under load.
@Suite(.serialized) struct ConversationKillTests {
    /// A script of `steps` shell steps, each appending its own line to `file`, then `finish`.
    static func lineScript(file: String, tag: String, steps: Int, latency: Int) -> FakeLLM.Script {
        var script = (0..<steps).map { index in
            var step = FakeLLM.Step.bash("echo \(tag)-\(index) >> \(file)")
            step.latencyMilliseconds = latency
            return step
        }
        script.append(.finish("Done."))
        return FakeLLM.Script(steps: script)
    }

    static func lines(_ file: String) -> [String] {
        ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    @Test func twentyConversationsSurviveThreeKilledWorkers() async throws {
        try await TestConversations.with { bed in
            let count = 20
            let steps = 12
            var workers = [
                try bed.launchWorkerProcess(name: "worker-a"),
                try bed.launchWorkerProcess(name: "worker-b"),
            ]
            defer { for worker in workers where worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
            try await running(try bed.makeRuntimeWorker(warm: 4)) {
                var conversations: [(id: UUID, file: String, tag: String)] = []
                for index in 0..<count {
                    let tag = "c\(index)"
                    let script = Self.lineScript(file: "/workspace/\(tag).log", tag: tag, steps: steps, latency: 200)
                    let id = try await bed.start(script: script)
                    conversations.append((id, try await bed.workspaceFile(id, "\(tag).log"), tag))
                }
                // Three times: let the work get going, then SIGKILL a worker mid-flight and start a new one.
                var kills: [(sent: Date, died: Date)] = []
                for round in 0..<3 {
                    // Kill only while the workers are busy: 15 more model requests since the last kill (the first
                    // time, since the start; a restarted worker takes a moment to connect) — or, should the work
                    // be nearly done by then (a fast machine), at once: waiting for calls that will never come
                    // would fail the test for nothing.
                    let before = bed.llm.totalArrivals
                    let nearlyAll = count * (steps + 1) - count
                    try await eventually("the workers make progress", timeout: .seconds(60)) {
                        bed.llm.totalArrivals >= min(before + 15, nearlyAll)
                    }
                    try await Task.sleep(for: .milliseconds(150))
                    let victim = round % 2
                    let sent = Date()
                    kill(workers[victim].processIdentifier, SIGKILL)
                    workers[victim].waitUntilExit()
                    kills.append((sent, Date()))
                    workers[victim] = try bed.launchWorkerProcess(name: victim == 0 ? "worker-a" : "worker-b")
                }

                var repeatedModelCalls = 0
                for conversation in conversations {
                    let record = try await bed.waitFor(conversation.id, [.finished, .error], timeout: .seconds(180))
                    #expect(
                        record.agentState == .finished,
                        "\(conversation.tag): \(record.lastError ?? "") \(bed.workerProcessLog("worker-a").suffix(2000))"
                    )
                    let events = try await bed.events(conversation.id)
                    // Ids 0…N, no gap, no duplicate.
                    #expect(events.map(\.id) == Array(0..<events.count).map { $0 }, "\(conversation.tag)")
                    // Every tool call ran exactly once, and none is reported interrupted: a step redelivered
                    // after a kill sends its recorded action again under its id, and the sandbox answers with
                    // the observation it kept. Each line is in the file once, in order; every action has
                    // exactly one observation.
                    #expect(
                        Self.lines(conversation.file) == (0..<steps).map { "\(conversation.tag)-\($0)" },
                        "\(conversation.tag)"
                    )
                    let runs = events.filter { $0.action == "run" }
                    for run in runs {
                        let answers = events.filter { $0.cause == run.id }
                        #expect(
                            answers.count == 1,
                            "\(conversation.tag): action \(run.id ?? -1) has \(answers.count) observations"
                        )
                    }
                    #expect(!events.contains { $0.extras["error_id"] == "AGENT_ERROR$INTERRUPTED" })
                    // One model call per step. The only second call is one whose first was cut by a kill: a worker
                    // died between sending the request and storing the answer, so the first call was made about
                    // when a worker died (the fake logs a request when it has read it, a little after it was sent)
                    // and the second after that.
                    let model = try await bed.model(of: conversation.id)
                    let answered = bed.llm.requests(model: model).filter { $0.status == 200 && !$0.isSummary }
                    let perIndex = Dictionary(grouping: answered, by: \.index)
                    #expect(perIndex.keys.sorted() == Array(0..<record.iteration))
                    // One key per step.
                    #expect(Set(answered.compactMap(\.idempotencyKey)).count == perIndex.count)
                    for calls in perIndex.values where calls.count > 1 {
                        repeatedModelCalls += calls.count - 1
                        // Asked again under the same Idempotency-Key: a provider that honours it answers the
                        // repeat without charging twice.
                        #expect(Set(calls.map(\.idempotencyKey)).count == 1, "\(calls.map(\.idempotencyKey))")
                        for (first, second) in zip(calls, calls.dropFirst()) {
                            #expect(
                                kills.contains { kill in
                                    first.at < kill.died.addingTimeInterval(0.5) && second.at > kill.sent
                                        && kill.sent.timeIntervalSince(first.at) < 3
                                },
                                "\(conversation.tag): step \(first.index) called the model at \(first.at.timeIntervalSince1970) and \(second.at.timeIntervalSince1970) with no kill between (kills: \(kills.map(\.sent.timeIntervalSince1970)))"
                            )
                        }
                    }
                    let stored = try await bed.runtime.postgres.query(
                        "SELECT count(*) AS calls FROM llm_calls WHERE conversation_id = $1",
                        [.uuid(conversation.id)]
                    )[0].decode(Int.self, "calls")
                    #expect(stored == record.iteration)
                }
                print(
                    "kill test: \(count) conversations finished, every action ran once; "
                        + "\(repeatedModelCalls) model calls repeated after a kill"
                )
            }
        }
    }

    @Test func sigtermDrainsTheStepsInFlightAndExitsZero() async throws {
        try await TestConversations.with { bed in
            let worker = try bed.launchWorkerProcess(name: "drained")
            defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
            let file = "/workspace/drain.log"
            try await running(try bed.makeRuntimeWorker()) {
                let id = try await bed.start(script: Self.lineScript(file: file, tag: "d", steps: 6, latency: 400))
                try await bed.waitFor(id, [.running])
                // Mid-chain: a command has run and more are to come (each step waits 400 ms for the model).
                let log = try await bed.workspaceFile(id, "drain.log")
                try await eventually("a line written") { !Self.lines(log).isEmpty }
                kill(worker.processIdentifier, SIGTERM)
                let exited = Date()
                worker.waitUntilExit()
                #expect(worker.terminationStatus == 0, "\(bed.workerProcessLog("drained").suffix(2000))")
                #expect(Date().timeIntervalSince(exited) < 20)
                // The step in flight was finished, not interrupted; a new worker takes the chain to its end.
                try await running(bed.makeWorker()) {
                    let record = try await bed.waitFor(id, [.finished, .error])
                    #expect(record.agentState == .finished, "\(record.lastError ?? "")")
                }
                let events = try await bed.events(id)
                #expect(!events.contains { $0.extras["error_id"] == "AGENT_ERROR$INTERRUPTED" })
                #expect(Self.lines(try await bed.workspaceFile(id, "drain.log")) == (0..<6).map { "d-\($0)" })
            }
        }
    }
}
