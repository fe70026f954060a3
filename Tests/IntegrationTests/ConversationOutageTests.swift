import AMQP
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import HTTPClient
import Messaging
import Postgres
import Testing

/// Outages of PostgreSQL and RabbitMQ in the middle of running conversations, each lasting until it has done
/// its harm (a step dead-lettered, messages failed three times, deliveries taken back), with users sending
/// messages meanwhile: afterwards every conversation finishes or ends in `error` with a reason, every message that
/// got a 2xx is in its conversation's events, and no action ran twice.
@Suite struct ConversationOutageTests {
    static let steps = 6

    /// The script of conversation `tag`: `steps` shell steps, each appending its own line to `tag.log`, a
    /// second apart (the model's latency), then `finish`.
    static func models(_ bed: TestConversations, count: Int) -> [(tag: String, model: String)] {
        (0..<count).map { index in
            let tag = "c\(index)"
            let steps = (0..<Self.steps).map { step in
                var next = FakeLLM.Step.bash("echo \(tag)-\(step) >> \(tag).log")
                next.latencyMilliseconds = 1000
                return next
            }
            return (tag, bed.scripted(steps + [.finish("Done.")]))
        }
    }

    /// What the outage left: each conversation ended, its lines ran once, and the accepted messages are kept.
    static func check(
        _ bed: TestConversations,
        _ started: [(tag: String, id: String)],
        accepted: Set<String>,
        fault: String
    ) async throws {
        var finished = 0
        var failed = 0
        var kept = 0
        for (tag, id) in started {
            let uuid = try #require(UUID(uuidString: BrokerAlarmTests.dashed(id)))
            // An accepted message may still wait in a retry queue when the outage ends: it is stored (and
            // answered) once its retry comes, maybe after the conversation finished its task.
            let expected = accepted.filter { $0.hasPrefix("\(tag):") }
            let said = try await eventuallyValue(
                "\(tag): every accepted message is in its events",
                timeout: .seconds(180),
                interval: .milliseconds(500)
            ) { () -> Set<String>? in
                let said = Set(try await bed.events(uuid).filter(\.isUserMessage).map(\.message))
                return expected.isSubset(of: said) ? said : nil
            }
            kept += expected.intersection(said).count
            let ended = try await bed.waitFor(uuid, [.finished, .error], timeout: .seconds(300))
            if ended.agentState == .finished {
                finished += 1
            } else {
                failed += 1
                #expect(ended.lastError?.isEmpty == false, "\(tag) ended in error without a reason")
            }
            let events = try await bed.events(uuid)
            let lines = ConversationControlTests.lines(try await bed.workspaceFile(uuid, "\(tag).log"))
            #expect(Set(lines).count == lines.count, "\(tag): a command ran twice: \(lines)")
            // Every action's output is in the conversation, once.
            for run in events where run.action == "run" {
                let answers = events.filter { $0.cause == run.id }
                #expect(answers.count == 1, "\(tag): action \(run.id ?? -1) has \(answers.count) observations")
                #expect(answers.first?.observation == "run", "\(tag): \(answers.first?.content ?? "")")
            }
        }
        print(
            "\(fault): \(finished) conversations finished, \(failed) ended in error; "
                + "\(accepted.count) messages accepted during it, \(kept) kept"
        )
    }

    /// Sends one message to each conversation through the gateway; returns those answered 2xx.
    static func sayToEach(_ gateway: TestGateway, _ started: [(tag: String, id: String)]) async -> Set<String> {
        var accepted: Set<String> = []
        for (tag, id) in started {
            let text = "\(tag): sent during the outage"
            let response = try? await gateway.request(
                .post,
                "/api/conversations/\(id)/message",
                body: JSONValue.object(["message": .string(text)]).serialized
            )
            if let response, (200..<300).contains(response.status) { accepted.insert(text) }
        }
        return accepted
    }

    /// `count` conversations under way, then PostgreSQL cut from every worker and the gateway, while each user
    /// sends a message, until `lasted` (named by `what`) says the outage did its harm.
    static func postgresOutage(
        count: Int,
        until what: String,
        _ lasted: @escaping @Sendable (TestConversations, _ accepted: Int) async throws -> Bool
    ) async throws {
        try await TestConversations.with { bed in
            try await ChainRecoveryTests.withProxiedPostgres(bed, poolSize: 40) { proxy, postgres in
                // Production's retries (5 attempts over 66 s for a step) and a watchdog quick enough for a test.
                let worker = bed.makeWorker(
                    agent: TestConversations.agentSettings { $0.stepWatchdog = .seconds(10) },
                    postgres: postgres
                )
                let runtime = try bed.runtime.makeWorker(
                    store: SandboxStore(postgres: postgres, deployment: bed.runtime.store.deployment)
                )
                // Keys stay cached through the outage, so messages can be accepted (the production default
                // of 10 s would refuse most of them with a 503, which loses nothing either).
                let settings = TestConversations.gatewaySettings { $0.keyCacheTTL = .seconds(600) }
                try await running(runtime, worker) {
                    try await bed.withGateway(settings: settings, postgres: postgres) { gateway in
                        var started: [(tag: String, id: String)] = []
                        for (tag, model) in Self.models(bed, count: count) {
                            started.append((tag, try await gateway.createConversation("Go.", model: model)))
                        }
                        try await eventually("the conversations are under way", timeout: .seconds(120)) {
                            bed.llm.totalArrivals >= 2 * count
                        }
                        proxy.sever()
                        let cut = ContinuousClock.now
                        let accepted = await Self.sayToEach(gateway, started)
                        try await eventually(what, timeout: .seconds(240), interval: .milliseconds(250)) {
                            try await lasted(bed, accepted.count)
                        }
                        proxy.restore()
                        let outage = ContinuousClock.now - cut
                        try await Self.check(bed, started, accepted: accepted, fault: "PostgreSQL outage of \(outage)")
                    }
                }
            }
        }
    }

    /// An outage longer than a step's retries (5 attempts over 66 s): the database stays away until a step
    /// went to the dead queue — the chain it leaves has nothing in flight, and only the watchdog restarts it.
    @Test func aPostgresOutageThatOutlastsTheStepRetries() async throws {
        try await Self.postgresOutage(count: 10, until: "a step's retries ran out (dead-lettered)") { bed, _ in
            try await DeadLetterQueue(connection: bed.runtime.connection, topology: bed.runtime.topology).count() >= 1
        }
    }

    /// The issue's restart: 20 conversations, the database away until every accepted message failed three
    /// times (it waits in the 30 s retry queue).
    @Test func twentyConversationsThroughAPostgresRestart() async throws {
        try await Self.postgresOutage(count: 20, until: "every accepted message failed three times") { bed, accepted in
            let topology = bed.runtime.topology
            let retry = topology.retryQueue(for: topology.conversationQueue, delay: .thirtySeconds)
            return try await bed.runtime.connection.inspect(queue: retry).messageCount >= max(1, accepted)
        }
    }

    @Test func aRabbitMQOutageMidRun() async throws {
        try await TestConversations.with { bed in
            let (proxy, url) = try TCPProxy.inFront(of: TestEnvironment.amqpURL)
            defer { proxy.stop() }
            let name = TestEnvironment.uniqueName("outage")
            func connect(_ role: String) async throws -> AMQPConnection {
                var configuration = AMQPConnection.Configuration(
                    url: try #require(AMQPURL(url)),
                    name: "\(name)-\(role)"
                )
                configuration.connectTimeout = .seconds(2)
                configuration.reconnectMin = .milliseconds(100)
                configuration.reconnectMax = .seconds(2)
                configuration.publishTimeout = .seconds(5)
                return try await AMQPConnection.connect(configuration: configuration)
            }
            // The workers' own pool, as large as production makes it (prefetch + 4): after the outage every
            // step comes back at once.
            let postgres = PostgresClient(url: bed.runtime.postgresURL, poolSize: 40)
            let publishing = try await connect("publish")
            let consuming = try await connect("consume")
            let gatewayBus = CommandBus(
                connection: try await connect("gateway"),
                consuming: try await connect("gateway-consume"),
                topology: bed.runtime.topology
            )
            let worker = bed.makeWorker(
                agent: TestConversations.agentSettings { $0.stepWatchdog = .seconds(10) },
                connection: publishing,
                consuming: consuming,
                postgres: postgres
            )
            let runtime = try bed.runtime.makeWorker(
                connection: publishing,
                consuming: consuming,
                store: SandboxStore(postgres: postgres, deployment: bed.runtime.store.deployment)
            )
            try await running(runtime, worker) {
                try await bed.withGateway(bus: gatewayBus, postgres: postgres) { gateway in
                    var started: [(tag: String, id: String)] = []
                    for (tag, model) in Self.models(bed, count: 10) {
                        started.append((tag, try await gateway.createConversation("Go.", model: model)))
                    }
                    try await eventually("the conversations are under way", timeout: .seconds(120)) {
                        bed.llm.totalArrivals >= 20
                    }
                    proxy.sever()
                    try await eventually("the gateway sees the broker gone") {
                        !gatewayBus.connection.status.connected
                    }
                    let cut = ContinuousClock.now
                    let accepted = await Self.sayToEach(gateway, started)
                    #expect(accepted.isEmpty, "the gateway refuses commands it cannot publish (503)")
                    // Away until the broker took back every step the workers held (their consumers are gone, the
                    // steps wait ready for whoever comes back) and the workers' publishes in flight failed at
                    // their deadline (amqp.publish_timeout, 5 s here): the steps they belonged to died.
                    let queue = bed.runtime.topology.conversationQueue
                    try await eventually("the broker took the steps in flight back", timeout: .seconds(120)) {
                        let (ready, consumers) = try await bed.runtime.connection.inspect(queue: queue)
                        return consumers == 0 && ready >= 1
                    }
                    try await eventually("a worker's publish failed at its deadline", timeout: .seconds(120)) {
                        publishing.status.expiredPublishes >= 1
                    }
                    proxy.restore()
                    let outage = ContinuousClock.now - cut
                    try await Self.check(bed, started, accepted: accepted, fault: "RabbitMQ outage of \(outage)")
                }
            }
            for connection in [publishing, consuming, gatewayBus.connection, gatewayBus.consuming] {
                await connection.close()
            }
            await postgres.close()
        }
    }
}
