import AMQP
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Logging
import Messaging
import Postgres
import RuntimeBackends
import RuntimeManager
import ServiceLifecycle
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runtime-manager workers on process sandboxes against the real RabbitMQ and PostgreSQL.
@Suite struct RuntimeWorkerProcessTests {
    @Test func provisionRunDestroy() async throws {
        try await TestRuntime.with { runtime in
            let worker = try runtime.makeWorker()
            try await running(worker) {
                let conversation = UUID()
                try await runtime.provision(conversation)
                let reply = try await runtime.reply(for: conversation)
                let ready = try #require(reply.ready, "expected sandbox_ready, got \(reply)")
                #expect(ready.backend == .process)
                #expect(ready.url.hasPrefix("http://127.0.0.1:"))
                let output = try await runtime.run("echo hello-from-$((40+2))", in: ready)
                #expect(output.contains("hello-from-42"))

                let record = try #require(try await runtime.store.sandbox(id: ready.sandboxID))
                #expect(record.status == .running)
                #expect(record.conversationID == conversation)
                let folder = try #require(record.reference)
                #expect(FileManager.default.fileExists(atPath: folder + "/workspace"))

                try await runtime.send(.destroy, sandbox: ready.sandboxID)
                try await eventually("the sandbox row is deleted") {
                    try await runtime.store.sandbox(id: ready.sandboxID) == nil
                }
                #expect(!FileManager.default.fileExists(atPath: folder))
                await #expect(throws: (any Error).self, "the sandbox's server is gone") {
                    try await runtime.run("true", in: ready)
                }
            }
        }
    }

    @Test func aRedeliveredProvisionAnswersWithTheSameSandbox() async throws {
        try await TestRuntime.with { runtime in
            let worker = try runtime.makeWorker()
            try await running(worker) {
                let conversation = UUID()
                try await runtime.provision(conversation)
                try await runtime.provision(conversation)
                try await runtime.provision(conversation)
                var sandboxes: Set<UUID> = []
                for _ in 0..<3 {
                    let ready = try #require(try await runtime.reply(for: conversation).ready)
                    sandboxes.insert(ready.sandboxID)
                }
                #expect(sandboxes.count == 1)
                let rows = try await runtime.store.all().filter { $0.conversationID == conversation }
                #expect(rows.count == 1)
            }
        }
    }

    @Test func aWarmClaimIsServedFromThePoolAndThePoolRefills() async throws {
        try await TestRuntime.with { runtime in
            let settings = TestRuntime.settings {
                $0.warmPool = [.init(backend: .process, image: RuntimeSettings.processImage, size: 2)]
            }
            let worker = try runtime.makeWorker(settings: settings)
            try await running(worker) {
                func warm() async throws -> [SandboxRecord] {
                    try await runtime.store.all().filter { $0.status == .warm }
                }
                try await eventually("the pool holds 2 warm sandboxes") { try await warm().count == 2 }
                let pool = Set(try await warm().map(\.id))

                let conversation = UUID()
                let ready = try await runtime.provisioned(conversation)
                #expect(pool.contains(ready.sandboxID), "the sandbox came from the warm pool")
                #expect(try await runtime.run("echo warm", in: ready).contains("warm"))

                try await eventually("the pool is refilled to 2") { try await warm().count == 2 }
                let rows = try await runtime.store.all()
                #expect(rows.count == 3)
                #expect(rows.filter { $0.conversationID == conversation }.map(\.id) == [ready.sandboxID])
            }
        }
    }

    @Test func pauseThenResumeKeepsTheWorkspace() async throws {
        try await TestRuntime.with { runtime in
            let worker = try runtime.makeWorker()
            try await running(worker) {
                let conversation = UUID()
                let ready = try await runtime.provisioned(conversation)
                _ = try await runtime.run("echo kept > notes.txt", in: ready)

                try await runtime.send(.pause, sandbox: ready.sandboxID)
                try await eventually("the sandbox is paused") {
                    try await runtime.store.sandbox(id: ready.sandboxID)?.status == .paused
                }
                let paused = try #require(try await runtime.store.sandbox(id: ready.sandboxID))
                let backend = try runtime.makeBackends([.process])[0]
                #expect(try await backend.inspect(paused.reference ?? "") == .paused)

                try await runtime.send(.resume, sandbox: ready.sandboxID)
                let resumed = try #require(try await runtime.reply(for: conversation).ready)
                #expect(resumed.sandboxID == ready.sandboxID)
                #expect(try await runtime.run("cat notes.txt", in: resumed).contains("kept"))

                try await runtime.send(.stop, sandbox: ready.sandboxID)
                try await eventually("the sandbox is stopped") {
                    try await runtime.store.sandbox(id: ready.sandboxID)?.status == .stopped
                }
                // A provision for the conversation starts its stopped sandbox again, files and all.
                let restarted = try await runtime.provisioned(conversation)
                #expect(restarted.sandboxID == ready.sandboxID)
                #expect(try await runtime.run("cat notes.txt", in: restarted).contains("kept"))
            }
        }
    }

    @Test func idleMaintenancePausesThenStops() async throws {
        try await TestRuntime.with { runtime in
            let settings = TestRuntime.settings {
                $0.maintenanceInterval = .milliseconds(200)
                $0.idlePauseAfter = .seconds(2)
                $0.idleStopAfter = .seconds(4)
            }
            let worker = try runtime.makeWorker(settings: settings)
            try await running(worker) {
                let conversation = UUID()
                let ready = try await runtime.provisioned(conversation)
                #expect(try await runtime.store.sandbox(id: ready.sandboxID)?.status == .running)
                try await eventually("the idle sandbox is paused") {
                    try await runtime.store.sandbox(id: ready.sandboxID)?.status == .paused
                }
                try await eventually("the idle sandbox is stopped") {
                    try await runtime.store.sandbox(id: ready.sandboxID)?.status == .stopped
                }
                let record = try #require(try await runtime.store.sandbox(id: ready.sandboxID))
                let backend = try runtime.makeBackends([.process])[0]
                #expect(try await backend.inspect(record.reference ?? "") == .stopped)
            }
        }
    }

    /// A client that uses the sandbox directly (a runtime-API session's) touches no row: the sandbox's own idle
    /// time keeps it running while it is used, and the idle rules apply once it is not.
    @Test func aSandboxUsedDirectlyIsNotPausedWhileItIsUsed() async throws {
        try await TestRuntime.with { runtime in
            let settings = TestRuntime.settings {
                $0.maintenanceInterval = .milliseconds(200)
                $0.idlePauseAfter = .seconds(2)
                $0.idleStopAfter = .zero
            }
            let worker = try runtime.makeWorker(settings: settings)
            try await running(worker) {
                let ready = try await runtime.provisioned(UUID())
                let handedOut = try #require(try await runtime.store.sandbox(id: ready.sandboxID)).lastActiveAt
                // Used straight at its URL until maintenance, finding it idle by its row past the pause rule, has
                // recorded its use from the sandbox's own clock more than twice the rule after it was handed out.
                try await eventually("maintenance recorded the sandbox's own use", timeout: .seconds(30)) {
                    #expect(try await runtime.run("echo in-use", in: ready).contains("in-use"))
                    let record = try await runtime.store.sandbox(id: ready.sandboxID)
                    return (record?.lastActiveAt.timeIntervalSince(handedOut) ?? 0) > 4
                }
                #expect(try await runtime.store.sandbox(id: ready.sandboxID)?.status == .running)
                try await eventually("the sandbox, no longer used, is paused", timeout: .seconds(15)) {
                    try await runtime.store.sandbox(id: ready.sandboxID)?.status == .paused
                }
            }
        }
    }

    @Test func gracefulShutdownFinishesTheProvisionInFlight() async throws {
        try await TestRuntime.with { runtime in
            let worker = try runtime.makeWorker()
            let group = ServiceGroup(
                configuration: .init(services: [worker], gracefulShutdownSignals: [], logger: Logger(label: "test"))
            )
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                let conversation = UUID()
                try await runtime.provision(conversation)
                try await eventually("the provision started") {
                    try await runtime.store.liveSandbox(conversation: conversation) != nil
                }
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                let ready = try #require(try await runtime.reply(for: conversation, timeout: .seconds(5)).ready)
                #expect(try await runtime.store.sandbox(id: ready.sandboxID)?.status == .running)
                let (messages, _) = try await runtime.connection.inspect(queue: runtime.topology.runtimeQueue)
                #expect(messages == 0, "the provision was acked, not requeued")
            }
        }
    }

    /// A process sandbox whose server died (SIGKILL) is not lost: its folder is there, so the next provision
    /// for its conversation starts it again in its workspace — same sandbox, same files.
    @Test func aKilledProcessSandboxIsStartedAgainInItsWorkspace() async throws {
        try await TestRuntime.with { runtime in
            let conversation = UUID()
            let worker = try runtime.makeWorker()
            try await running(worker) {
                let ready = try await runtime.provisioned(conversation)
                _ = try await runtime.run("echo kept > notes.txt", in: ready)
                let record = try #require(try await runtime.store.sandbox(id: ready.sandboxID))
                try await TestRuntime.killSandboxServer(folder: record.reference ?? "")
                try await eventually("the sandbox is stopped") {
                    try await runtime.makeBackends([.process])[0].inspect(record.reference ?? "") == .stopped
                }

                let again = try await runtime.provisioned(conversation)
                #expect(again.sandboxID == ready.sandboxID, "the same sandbox, not a replacement")
                #expect(try await runtime.run("cat notes.txt", in: again).contains("kept"))
                #expect(try await runtime.store.sandbox(id: ready.sandboxID)?.status == .running)
            }
        }
    }

    /// A sandbox whose files are gone is lost, and only then does its conversation get a new one.
    @Test func aSandboxWhoseFolderIsGoneIsLostAndReplaced() async throws {
        try await TestRuntime.with { runtime in
            let conversation = UUID()
            let worker = try runtime.makeWorker()
            try await running(worker) {
                let ready = try await runtime.provisioned(conversation)
                let folder = try #require(try await runtime.store.sandbox(id: ready.sandboxID)?.reference)
                try await runtime.makeBackends([.process])[0].destroy(folder)

                let replacement = try await runtime.provisioned(conversation)
                #expect(replacement.sandboxID != ready.sandboxID)
                #expect(try await runtime.store.sandbox(id: ready.sandboxID)?.status == .lost)
                #expect(try await runtime.run("echo replaced", in: replacement).contains("replaced"))
            }
        }
    }

    /// Process sandboxes shut down with their worker. A worker that starts later records them `stopped`
    /// (not lost) and provisions nothing by itself; when the conversation asks again, its sandbox is started
    /// in its old workspace.
    @Test func processSandboxesDieWithTheirWorkerAndComeBackWhenUsed() async throws {
        try await TestRuntime.with { runtime in
            let process = try runtime.launchWorkerProcess()
            let conversation = UUID()
            try await runtime.provision(conversation)
            let first = try? await runtime.reply(for: conversation)
            let ready = try #require(first?.ready, "worker log: \(runtime.workerProcessLog)")
            _ = try await runtime.run("echo survived > notes.txt", in: ready)
            // Killed once its provision is recorded handled: a provision killed between its answer and that
            // record is given to the survivor again and rightly answered again (CI saw it once).
            try await eventually("the provision recorded as handled") {
                try await runtime.postgres.query("SELECT count(*) AS n FROM processed_messages")[0]
                    .decode(Int.self, "n") >= 1
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            // The sandbox's lifeline closed with the worker: it shuts down by itself.
            let folder = try #require(try await runtime.store.sandbox(id: ready.sandboxID)?.reference)
            let backend = try runtime.makeBackends([.process])[0]
            try await eventually("the orphaned sandbox exits") {
                try await backend.inspect(folder) == .stopped
            }
            #expect((try? await runtime.run("true", in: ready)) == nil, "its server is gone")
            let survivor = try runtime.makeWorker()
            try await running(survivor) {
                try await eventually("the new worker's reconciliation records the sandbox stopped") {
                    try await runtime.store.sandbox(id: ready.sandboxID)?.status == .stopped
                }
                // A sentinel provision for another conversation: answered after anything reconciliation sent.
                let sentinel = UUID()
                try await runtime.provision(sentinel)
                _ = try #require(try await runtime.reply(for: sentinel).ready)
                #expect(try runtime.allReplies()[conversation]?.count == 1, "nothing was provisioned unasked")

                let again = try await runtime.provisioned(conversation)
                #expect(again.sandboxID == ready.sandboxID)
                #expect(try await runtime.run("cat notes.txt", in: again).contains("survived"))
            }
        }
    }

    /// Runtime workers on other nodes leave a node's sandboxes alone: one on another machine (whose backend
    /// lists none of them) and one on this machine (whose backend lists their folders) reconcile and maintain
    /// without marking them lost, pausing them or removing them. The sandbox is served at its node's address.
    @Test func aSecondNodeLeavesTheFirstNodesSandboxesAlone() async throws {
        try await TestRuntime.with { runtime in
            let workerA = try runtime.makeWorker(node: NodeSettings(id: "node-a", advertiseHost: "127.0.0.2"))
            try await running(workerA) {
                let ready = try await runtime.provisioned(UUID())
                #expect(ready.url.hasPrefix("http://127.0.0.2:"), "\(ready.url)")
                #expect(try await runtime.store.sandbox(id: ready.sandboxID)?.node == "node-a")
                _ = try await runtime.run("echo mine > notes.txt", in: ready)

                let eager = TestRuntime.settings { $0.idlePauseAfter = .milliseconds(1) }
                let elsewhere = RuntimeWorker(
                    configuration: .init(settings: eager, defaultBackend: .process),
                    bus: runtime.bus,
                    store: SandboxStore(postgres: runtime.postgres, deployment: runtime.namespace, node: "node-b"),
                    backends: [
                        try ProcessBackend(
                            root: runtime.processRoot + "-node-b",
                            settings: eager,
                            advertiseHost: "127.0.0.3",
                            logger: Logger(label: "test.runtime")
                        )
                    ],
                    http: runtime.http
                )
                let sameMachine = try runtime.makeWorker(
                    settings: eager,
                    node: NodeSettings(id: "node-c", advertiseHost: "127.0.0.3")
                )
                for worker in [elsewhere, sameMachine] {
                    try await worker.reconcile()
                    #expect(await worker.maintain(), "the node's maintenance lock is its own")
                }
                let record = try #require(try await runtime.store.sandbox(id: ready.sandboxID))
                #expect(record.status == .running, "\(record.reason ?? "")")
                #expect(record.node == "node-a")
                #expect(try await runtime.run("cat notes.txt", in: ready).contains("mine"))
            }
        }
    }

    /// A command about another node's sandbox is not judged by a worker whose backend cannot see it: it is sent
    /// on to that node's queue, where it waits for the node's workers — a pause, and a provision whose sandbox
    /// must be woken. Nothing is marked lost or handed out twice meanwhile.
    @Test func commandsAboutAnotherNodesSandboxGoToThatNode() async throws {
        try await TestRuntime.with { runtime in
            let nodeA = NodeSettings(id: "node-a", advertiseHost: "127.0.0.2")
            let (toPause, toWake) = (UUID(), UUID())
            let (first, second) = try await running(try runtime.makeWorker(node: nodeA)) {
                let first = try await runtime.provisioned(toPause)
                let second = try await runtime.provisioned(toWake)
                try await runtime.send(.stop, sandbox: second.sandboxID)
                try await eventually("node A stopped the second sandbox") {
                    try await runtime.store.sandbox(id: second.sandboxID)?.status == .stopped
                }
                return (first, second)
            }
            let queueA = runtime.topology.runtimeNodeQueue("node-a")
            let nodeB = try runtime.makeWorker(node: NodeSettings(id: "node-b", advertiseHost: "127.0.0.3"))
            try await running(nodeB) {
                try await runtime.send(.pause, sandbox: first.sandboxID)
                try await runtime.provision(toWake)
                // (With the stop too, when node A's worker stopped before it recorded the stop as handled.)
                try await eventually("node B sent both on to node A's queue") {
                    try await runtime.connection.inspect(queue: queueA).messageCount >= 2
                }
            }
            #expect(try await runtime.store.sandbox(id: first.sandboxID)?.status == .running)
            #expect(try await runtime.store.sandbox(id: second.sandboxID)?.status == .stopped)
            #expect(try runtime.allReplies()[toWake]?.count == 1, "no answer to the second provision yet")
            try await running(try runtime.makeWorker(node: nodeA)) {
                try await eventually("node A paused its sandbox") {
                    try await runtime.store.sandbox(id: first.sandboxID)?.status == .paused
                }
                let again = try await runtime.reply(for: toWake)
                #expect(again.ready?.sandboxID == second.sandboxID, "the same sandbox, started again: \(again)")
            }
        }
    }

    /// A node that stops renewing its lease is taken for dead by a worker of another node: its sandbox is marked
    /// lost, a provision that waited in its queue comes back to the shared queue and is answered with a new
    /// sandbox, and the node, when it returns, removes the sandbox the database gave up on.
    @Test func aNodeThatStopsRenewingItsLeaseIsTakenForDead() async throws {
        try await TestRuntime.with { runtime in
            // Node A's lease outlasts what node B forwards to it (which comes back when it expires, and is sent on
            // again while node A counts as alive), and node B's start under load: with 5 s, a slow start saw node A
            // already taken for dead, so the provision never waited in its queue.
            let leaseA = TestRuntime.settings { $0.nodeLease = .seconds(8) }
            let quick = TestRuntime.settings { $0.nodeLease = .seconds(2) }
            let nodeA = NodeSettings(id: "node-a", advertiseHost: "127.0.0.2")
            let conversation = UUID()
            let first = try await running(try runtime.makeWorker(settings: leaseA, node: nodeA)) {
                let first = try await runtime.provisioned(conversation)
                try await runtime.send(.stop, sandbox: first.sandboxID)
                try await eventually("node A stopped its sandbox") {
                    try await runtime.store.sandbox(id: first.sandboxID)?.status == .stopped
                }
                return first
            }
            let folder = try #require(try await runtime.store.sandbox(id: first.sandboxID)?.reference)
            let nodeB = NodeSettings(id: "node-b", advertiseHost: "127.0.0.3")
            try await running(try runtime.makeWorker(settings: quick, node: nodeB)) {
                // Its sandbox must be woken, which only node A can do: the provision waits in node A's queue
                // until node A is taken for dead, then comes back and gets a new sandbox on node B. The stop may
                // wait there beside it: node A can leave after carrying it out but before acking it, and the
                // broker then gives it again, which node B forwards to node A too (CI saw 2).
                try await runtime.provision(conversation)
                let queueA = runtime.topology.runtimeNodeQueue("node-a")
                try await eventually("the provision waits in node A's queue") {
                    try await runtime.connection.inspect(queue: queueA).messageCount >= 1
                }
                let reply = try await runtime.reply(for: conversation)
                let second = try #require(reply.ready, "\(reply)")
                #expect(second.sandboxID != first.sandboxID)
                #expect(second.url.hasPrefix("http://127.0.0.3:"), "\(second.url)")
                let given = try #require(try await runtime.store.sandbox(id: first.sandboxID))
                #expect(given.status == .lost)
                #expect(given.reason?.contains("node-a") == true, "\(given.reason ?? "")")
            }
            let backend = try runtime.makeBackends([.process])[0]
            #expect(try await backend.inspect(folder) != .missing, "node B leaves node A's sandbox alone")
            try await running(try runtime.makeWorker(settings: leaseA, node: nodeA)) {
                try await eventually("node A, back, removed the sandbox given up on") {
                    try await backend.inspect(folder) == .missing
                }
            }
        }
    }

    /// A node that was taken for dead and renews its lease again hears so once, from the renewal that cleared the
    /// mark (its maintenance then removes what the database gave up on); the renewals after say nothing.
    @Test func aRenewalSaysOnceThatTheNodeWasTakenForDead() async throws {
        try await TestRuntime.with { runtime in
            let nodeA = SandboxStore(postgres: runtime.postgres, deployment: runtime.namespace, node: "node-a")
            let nodeB = SandboxStore(postgres: runtime.postgres, deployment: runtime.namespace, node: "node-b")
            #expect(try await nodeA.renewNode(lease: .milliseconds(1), advertiseHost: "127.0.0.2") == false)
            try await eventually("node B took node A for dead") {
                _ = try await nodeB.sweepLapsedNodes()
                let rows = try await runtime.postgres.query(
                    "SELECT swept_at IS NOT NULL FROM nodes WHERE id = 'node-a'"
                )
                return try rows.first?.decode(Bool.self, 0) == true
            }
            #expect(try await nodeA.renewNode(lease: .seconds(60), advertiseHost: "127.0.0.2") == true)
            #expect(try await nodeA.renewNode(lease: .seconds(60), advertiseHost: "127.0.0.2") == false)
            #expect(try await nodeB.sweepLapsedNodes().isEmpty, "a renewed node is alive")
        }
    }

    /// What a forwarded command's expiry is made from: the rest of the node's lease by the database's clock — none
    /// for a node that never renewed, zero once it ran out.
    @Test func aNodesLeaseSaysHowLongItStillRuns() async throws {
        try await TestRuntime.with { runtime in
            let store = SandboxStore(postgres: runtime.postgres, deployment: runtime.namespace, node: "node-a")
            #expect(try await store.leaseRemaining(node: "node-a") == nil)
            _ = try await store.renewNode(lease: .seconds(60), advertiseHost: "127.0.0.2")
            let remaining = try #require(try await store.leaseRemaining(node: "node-a"))
            #expect(remaining > .seconds(50) && remaining <= .seconds(60), "\(remaining)")
            _ = try await store.renewNode(lease: .milliseconds(1), advertiseHost: "127.0.0.2")
            try await eventually("the lease ran out") { try await store.leaseRemaining(node: "node-a") == .zero }
        }
    }

    @Test func sigtermDrainsAndExitsZero() async throws {
        try await TestRuntime.with { runtime in
            let process = try runtime.launchWorkerProcess()
            // The worker logs each wait of its start-up: a slow start says which one it was.
            try await eventually("the worker consumes", describe: { "worker log: \(runtime.workerProcessLog)" }) {
                try await runtime.connection.inspect(queue: runtime.topology.runtimeQueue).consumerCount == 1
            }
            let conversation = UUID()
            try await runtime.provision(conversation)
            try await eventually("the provision started") {
                try await runtime.store.liveSandbox(conversation: conversation) != nil
            }
            kill(process.processIdentifier, SIGTERM)
            let status = await withCheckedContinuation { continuation in
                Thread {
                    process.waitUntilExit()
                    continuation.resume(returning: process.terminationStatus)
                }.start()
            }
            #expect(status == 0)
            #expect(process.terminationReason == .exit)
            let reply = try? await runtime.reply(for: conversation, timeout: .seconds(5))
            #expect(
                reply?.ready != nil,
                "the provision in flight was finished; worker log: \(runtime.workerProcessLog)"
            )
            let (messages, consumers) = try await runtime.connection.inspect(queue: runtime.topology.runtimeQueue)
            #expect(messages == 0)
            #expect(consumers == 0)
        }
    }

    @Test func aFailingCommandIsRetriedLaterAndAMalformedOneIsDeadLettered() async throws {
        try await TestRuntime.with { runtime in
            // The worker reaches PostgreSQL through a proxy the test can cut.
            guard let base = URLComponents(string: TestEnvironment.postgresURL), let port = base.port else {
                throw DeckhandError(.invalidConfiguration, "DECKHAND_POSTGRES_URL has no port")
            }
            let proxy = try TCPProxy.start(targetHost: "127.0.0.1", targetPort: port)
            defer { proxy.stop() }
            let proxiedURL = runtime.postgresURL.replacingOccurrences(of: ":\(port)/", with: ":\(proxy.port)/")
            let postgres = PostgresClient(url: proxiedURL, poolSize: 4, acquireTimeout: .seconds(2))
            defer { Task { await postgres.close() } }
            let worker = try runtime.makeWorker(store: SandboxStore(postgres: postgres, deployment: runtime.namespace))
            try await running(worker) {
                try await eventually("the worker consumes") {
                    try await runtime.connection.inspect(queue: runtime.topology.runtimeQueue).consumerCount == 1
                }
                proxy.sever()
                let conversation = UUID()
                try await runtime.provision(conversation)
                // It waits in the first retry queue for a second, and (failing again) in the next for five: a
                // loaded machine may look only once it has moved on.
                let retryQueues = [RetryDelay.oneSecond, .fiveSeconds].map {
                    runtime.topology.retryQueue(for: runtime.topology.runtimeQueue, delay: $0)
                }
                try await eventually("the failed provision waits in a retry queue") {
                    var waiting = 0
                    for queue in retryQueues {
                        waiting += try await runtime.connection.inspect(queue: queue).messageCount
                    }
                    return waiting == 1
                }
                proxy.restore()
                let reply = try await runtime.reply(for: conversation)
                #expect(reply.ready != nil, "the retried provision succeeded: \(reply)")

                for (type, body) in [("provision", "not json"), ("launch_rockets", "{}")] {
                    try await runtime.connection.publish(
                        AMQPMessage(json: Array(body.utf8), type: type),
                        exchange: runtime.topology.commandsExchange,
                        routingKey: runtime.topology.runtimeQueue
                    )
                }
                try await eventually("both bad commands are dead-lettered") {
                    try await runtime.connection.inspect(queue: runtime.topology.deadQueue).messageCount == 2
                }
            }
        }
    }
}
