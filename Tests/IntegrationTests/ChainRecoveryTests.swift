import AMQP
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Messaging
import Postgres
import Testing

@testable import ConversationWorker

/// A chain always resumes: a conversation whose step died is not left `running` with nothing in flight.
@Suite struct ChainRecoveryTests {
    /// Runs `body` with a client of the bed's database through a proxy the test can cut (quick to give up
    /// while it is cut); closes both afterwards.
    static func withProxiedPostgres<T: Sendable>(
        _ bed: TestConversations,
        poolSize: Int = 4,
        _ body: (TCPProxy, PostgresClient) async throws -> T
    ) async throws -> T {
        let (proxy, url) = try TCPProxy.inFront(of: bed.runtime.postgresURL)
        let postgres = PostgresClient(
            url: url,
            poolSize: poolSize,
            acquireTimeout: .seconds(2),
            connectTimeout: .seconds(2)
        )
        let result: Result<T, any Error>
        do {
            result = .success(try await body(proxy, postgres))
        } catch {
            result = .failure(error)
        }
        await postgres.close()
        proxy.stop()
        return try result.get()
    }

    @Test func aStepKilledByAPostgresOutageIsRestartedOnceTheDatabaseIsBack() async throws {
        try await TestConversations.with { bed in
            try await Self.withProxiedPostgres(bed) { proxy, postgres in
                // One attempt per step: the outage kills the step at once (in production, after its retries).
                // A quick watchdog with room for a loaded machine: the sandbox may take seconds to come, and a
                // conversation still loading after stepRestarts watchdog rounds is given up.
                let worker = bed.makeWorker(
                    agent: TestConversations.agentSettings {
                        $0.stepWatchdog = .seconds(1)
                        $0.stepRestarts = 20
                    },
                    maxAttempts: 1,
                    postgres: postgres
                )
                let dead = DeadLetterQueue(connection: bed.runtime.connection, topology: bed.runtime.topology)
                try await running(try bed.makeRuntimeWorker(), worker) {
                    let id = try await bed.start(
                        script: ConversationControlTests.slowScript(
                            file: "/workspace/outage.txt",
                            count: 6,
                            latency: 300
                        )
                    )
                    let file = try await bed.workspaceFile(id, "outage.txt")
                    try await eventually("a line written") { !ConversationControlTests.lines(file).isEmpty }
                    proxy.sever()
                    // The step in flight fails on its next write and dies: the chain has nothing in flight.
                    try await eventually("the step dead-lettered", timeout: .seconds(60)) {
                        try await dead.count() >= 1
                    }
                    #expect(try await bed.store.conversation(id)?.agentState == .running)
                    proxy.restore()
                    let ended = try await bed.waitFor(id, [.finished, .error], timeout: .seconds(60))
                    #expect(ended.agentState == .finished, "\(ended.lastError ?? "")")
                    let lines = ConversationControlTests.lines(file)
                    #expect(Set(lines).count == lines.count, "no command ran twice: \(lines)")
                    #expect(lines.last == "line-5", "the chain went on to its end: \(lines)")
                }
            }
        }
    }

    @Test func aMessageAcceptedDuringAnOutageIsKeptAndAnsweredAfterIt() async throws {
        try await TestConversations.with { bed in
            try await Self.withProxiedPostgres(bed) { proxy, postgres in
                // Steps get one attempt; a user's command is retried for agent.command_retry_for (15 min) anyway.
                let worker = bed.makeWorker(maxAttempts: 1, postgres: postgres)
                try await running(try bed.makeRuntimeWorker(), worker) {
                    let id = try await bed.start(script: FakeLLM.Script(steps: [.reply("Hello."), .reply("Got it.")]))
                    try await bed.waitFor(id, [.awaitingUserInput])
                    proxy.sever()
                    try await bed.say("Sent during the outage", to: id, messageID: "outage-message")
                    // It failed twice (it waits in the 5 s retry queue): the database has been away a while.
                    let topology = bed.runtime.topology
                    let retry = topology.retryQueue(for: topology.conversationQueue, delay: .fiveSeconds)
                    try await eventually(
                        "the message retried through the outage",
                        timeout: .seconds(60),
                        describe: {
                            let stored = try? await bed.events(id).contains { $0.message == "Sent during the outage" }
                            return "stored already: \(stored.map(String.init) ?? "cannot tell")"
                        }
                    ) {
                        try await bed.runtime.connection.inspect(queue: retry).messageCount == 1
                    }
                    proxy.restore()
                    try await eventually("the message answered", timeout: .seconds(60)) {
                        let events = try await bed.events(id)
                        return events.last?.announcedState == .awaitingUserInput
                            && events.contains { $0.isUserMessage && $0.message == "Sent during the outage" }
                    }
                    let events = try await bed.events(id)
                    #expect(events.filter { $0.isUserMessage && $0.message == "Sent during the outage" }.count == 1)
                    #expect(bed.llm.requests(model: try await bed.model(of: id)).count == 2)
                    // The first step may still have been finishing (its work committed, the state visible) when the
                    // database went away, and with one attempt its delivery dies (CI saw it once); the user's
                    // message, retried for 15 min, never does.
                    let dead = DeadLetterQueue(connection: bed.runtime.connection, topology: bed.runtime.topology)
                    let letters = try await dead.sweep(wait: .seconds(5)) { _ in .keep }.map(\.letter)
                    #expect(!letters.contains { $0.id == "outage-message" }, "\(letters.map(\.id))")
                    #expect(letters.allSatisfy { $0.type == "step" }, "\(letters.map(\.type))")
                }
            }
        }
    }

    @Test func aProvisionRetriedThroughAnOutageGivesTheConversationItsSandbox() async throws {
        try await TestConversations.with { bed in
            try await Self.withProxiedPostgres(bed) { proxy, postgres in
                // The runtime worker's database is the one that goes away.
                let store = SandboxStore(postgres: postgres, deployment: bed.runtime.namespace)
                let topology = bed.runtime.topology
                try await running(try bed.runtime.makeWorker(store: store), bed.makeWorker()) {
                    try await eventually("the runtime worker consuming") {
                        try await bed.runtime.connection.inspect(queue: topology.runtimeQueue).consumerCount > 0
                    }
                    proxy.sever()
                    let id = try await bed.start(script: FakeLLM.Script(steps: [.reply("Hello.")]))
                    // The provision failed twice (it waits in the 5 s retry queue): the outage lasts a while.
                    let retry = topology.retryQueue(for: topology.runtimeQueue, delay: .fiveSeconds)
                    try await eventually("the provision retried through the outage", timeout: .seconds(30)) {
                        try await bed.runtime.connection.inspect(queue: retry).messageCount == 1
                    }
                    #expect(try await bed.store.conversation(id)?.agentState == .loading)
                    proxy.restore()
                    let record = try await bed.waitFor(id, [.awaitingUserInput, .error], timeout: .seconds(60))
                    #expect(record.agentState == .awaitingUserInput, "\(record.lastError ?? "")")
                }
            }
        }
    }

    @Test func aRedeliveredMessagePublishesWhatItsFirstDeliveryCommitted() async throws {
        try await TestConversations.with { bed in
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                let id = try await bed.start(script: FakeLLM.Script(steps: [.reply("Hello.")]))
                try await bed.waitFor(id, [.awaitingUserInput])
                try await bed.send(.pause, ConversationTarget(conversationID: id))
                try await bed.waitFor(id, [.paused])
                // What a worker that died between its commit and its publish leaves: the message handled and
                // stored, never published.
                let stored = try await bed.store.postgres.transaction { connection in
                    _ = try ConversationStore.markProcessed(
                        connection,
                        consumer: ConversationWorker.consumerName,
                        messageID: "committed-unpublished"
                    )
                    return try ConversationStore.append(
                        connection,
                        id,
                        [.userMessage("Are you there?")],
                        step: nil,
                        masker: SecretMasker([])
                    )
                }
                let storedID = try #require(stored.first?.id)
                #expect(!bed.publishedEvents(id).contains { $0["id"]?.intValue == storedID })
                // Its redelivery finds the work done, and publishes what was committed.
                try await bed.say("Are you there?", to: id, messageID: "committed-unpublished")
                try await eventually("the committed message published") {
                    bed.publishedEvents(id).contains { $0["id"]?.intValue == storedID }
                }
                #expect(try await bed.events(id).filter(\.isUserMessage).count == 2, "stored once")
            }
        }
    }

    /// A watchdog that looks for chains quiet for a second and gives up after two restarts; a new
    /// conversation; and `quiet`, which sets `assignments` on it and makes it unchanged for an hour.
    static func quietConversation(
        _ bed: TestConversations,
        _ assignments: String
    ) async throws -> (ChainWatchdog, UUID, @Sendable () async throws -> Void) {
        let agent = TestConversations.agentSettings {
            $0.stepWatchdog = .seconds(1)
            $0.stepRestarts = 2
        }
        let watchdog = ChainWatchdog(worker: bed.makeWorker(agent: agent))
        let id = UUID()
        _ = try await bed.store.create(ConversationStore.NewConversation(id: id, userID: bed.userID))
        let postgres = bed.runtime.postgres
        let quiet: @Sendable () async throws -> Void = {
            _ = try await postgres.execute(
                "UPDATE conversations SET \(assignments), updated_at = now() - interval '1 hour' WHERE id = $1",
                [.uuid(id)]
            )
        }
        return (watchdog, id, quiet)
    }

    @Test func aStepThatKeepsDyingEndsTheChainInErrorAndAMessageRestartsIt() async throws {
        try await TestConversations.with { bed in
            // A chain at step 3 whose step nothing runs (no worker consumes here): quiet for an hour.
            let (watchdog, id, quiet) = try await Self.quietConversation(
                bed,
                "agent_state = 'running', step_seq = 3, step_published = 3"
            )
            try await quiet()
            // A copy of the step holding the conversation keeps the watchdog away.
            let key = bed.store.stepLockKey(id)
            let held = try await bed.runtime.postgres.withReservedConnection { connection in
                _ = try await connection.run { try ConversationStore.tryLock($0, key) }
                let outcome = try await watchdog.sweep()
                _ = try await connection.run { try ConversationStore.unlock($0, key) }
                return outcome
            }
            #expect(held.isEmpty)

            let queue = bed.runtime.topology.conversationQueue
            for restart in 1...2 {
                #expect(try await watchdog.sweep() == [id: .restarted(step: 3)], "restart \(restart)")
                #expect(try await bed.runtime.connection.inspect(queue: queue).messageCount == 1)
                try await quiet()
                // While a command waits in the queue (the step may only be waiting its turn), nothing is done.
                #expect(try await watchdog.sweep().isEmpty, "left alone behind a backlog")
                // A worker took the step and lost it.
                #expect(try await bed.runtime.connection.purge(queue: queue) == 1)
            }
            #expect(try await watchdog.sweep() == [id: .ended(step: 3)])
            let record = try #require(try await bed.store.conversation(id))
            #expect(record.agentState == .error)
            #expect(record.lastError?.contains("step 3 did not complete") == true, "\(record.lastError ?? "")")
            let events = try await bed.events(id)
            #expect(events.contains { $0.extras["error_id"] == "AGENT_ERROR$STEP_LOST" })
            #expect(events.last?.announcedState == .error)
            // An error is idle: the user's next message starts a chain again.
            #expect(AgentStateMachine.apply(.message, in: record.agentState)?.to == .running)
        }
    }

    /// A conversation waiting in `loading` whose `provision` died is asked a sandbox again once it has been
    /// quiet for `agent.step_watchdog`; after `agent.step_restarts` requests with no sandbox, it ends in
    /// `error`, saying so.
    @Test func aConversationWaitingForItsSandboxIsAskedForAgainThenEndsInError() async throws {
        try await TestConversations.with { bed in
            let (watchdog, id, quiet) = try await Self.quietConversation(
                bed,
                "agent_state = 'loading', resume_on_ready = true"
            )
            let queue = bed.runtime.topology.runtimeQueue
            for request in 1...2 {
                try await quiet()
                #expect(try await watchdog.sweep() == [id: .sandboxRequested], "request \(request)")
                // The provision went out (and is lost: nothing consumes it here).
                #expect(try await bed.runtime.connection.purge(queue: queue) == 1)
            }
            try await quiet()
            #expect(try await watchdog.sweep() == [id: .sandboxAbandoned])
            let record = try #require(try await bed.store.conversation(id))
            #expect(record.agentState == .error)
            #expect(record.lastError?.contains("not ready after") == true, "\(record.lastError ?? "")")
            #expect(try await bed.events(id).last?.announcedState == .error)
        }
    }

    /// End to end: the provision of a new conversation is lost (purged before any runtime worker ran); the
    /// watchdog asks again and the conversation gets its sandbox and finishes.
    @Test func aLostProvisionIsSentAgainAndTheConversationFinishes() async throws {
        try await TestConversations.with { bed in
            // Rounds enough for a sandbox that takes seconds on a loaded machine (CI gave it 4 s and it failed).
            let worker = bed.makeWorker(
                agent: TestConversations.agentSettings {
                    $0.stepWatchdog = .seconds(1)
                    $0.stepRestarts = 20
                }
            )
            try await running(worker) {
                let id = try await bed.start(script: FakeLLM.Script(steps: [.bash("echo hi"), .finish("Done.")]))
                let queue = bed.runtime.topology.runtimeQueue
                try await eventually("the provision is queued") {
                    try await bed.runtime.connection.inspect(queue: queue).messageCount >= 1
                }
                #expect(try await bed.runtime.connection.purge(queue: queue) >= 1)
                try await running(try bed.makeRuntimeWorker()) {
                    let ended = try await bed.waitFor(id, [.finished, .error], timeout: .seconds(60))
                    #expect(ended.agentState == .finished, "\(ended.lastError ?? "")")
                }
            }
        }
    }
}
