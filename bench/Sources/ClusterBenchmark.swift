import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Postgres

/// Deckhand over a cluster of `deploy/cluster.sh` (three nodes, a 3-node RabbitMQ cluster, PostgreSQL with a
/// standby) and the scripted model: conversations per second and step latency with the workers of 1, 2 and 3
/// nodes, and the time from a node's death to its conversations running again.
///
/// One cluster serves every round: nodes 2 and 3 are killed for the 1-node round and started again for the
/// next ones, so each round has the workers and gateways of the nodes that run. Each round creates
/// `conversations` conversations at once over the running gateways, each `steps` commands with a model that
/// answers after `latency` ms, then `finish`; the rate is conversations over the time from the first create to
/// the last `finished` event. A step is the time between two commands of a conversation (the model's latency
/// included). The death round kills node 3 once every conversation is under way, and times, for each
/// conversation whose sandbox node 3 held, the kill to the event saying the workspace was lost and to the first
/// command that ran in the new sandbox.
enum ClusterBenchmark {
    struct Round {
        var conversationsPerSecond: Double
        var stepMilliseconds: [Double]
    }

    static func run(conversations: Int, steps: Int, latency: Int, lease: Int) async throws -> [BenchmarkResult] {
        let llm = FakeLLM()
        let settings = [
            "DECKHAND_LLM_BASE_URL": "", "DECKHAND_LLM_API_KEY": "sk-bench-key", "DECKHAND_LLM_USER_MODELS": "*",
            "DECKHAND_GATEWAY_MAX_RUNNING_CONVERSATIONS": "0", "DECKHAND_GATEWAY_MAX_LIVE_SANDBOXES": "0",
            "DECKHAND_RUNTIME_NODE_LEASE": "\(lease)s", "DECKHAND_LOG_LEVEL": "warning",
        ]
        return try await llm.serve { base in
            var settings = settings
            settings["DECKHAND_LLM_BASE_URL"] = base
            return try await TestCluster.with(nodes: 3, settings: settings) { cluster in
                let http = try HTTPClient()
                let key = try await cluster.createKey(user: "bench")
                let gateways = (1...3).map { TestGateway(baseURL: cluster.gatewayURL($0), key: key, http: http) }
                let database = PostgresClient(url: cluster.postgresURL, poolSize: 1)
                do {
                    let bench = Bench(llm: llm, cluster: cluster, gateways: gateways, database: database)
                    let results = try await bench.measure(
                        conversations: conversations,
                        steps: steps,
                        latency: latency,
                        lease: lease
                    )
                    await database.close()
                    return results
                } catch {
                    await database.close()
                    throw error
                }
            }
        }
    }

    struct Bench {
        let llm: FakeLLM
        let cluster: TestCluster
        let gateways: [TestGateway]
        let database: PostgresClient

        func measure(conversations: Int, steps: Int, latency: Int, lease: Int) async throws -> [BenchmarkResult] {
            var results: [BenchmarkResult] = []
            try await cluster.run("kill-node", "3")
            try await cluster.run("kill-node", "2")
            var single: Double?
            for nodes in 1...3 {
                if nodes > 1 { try await cluster.run("start-node", String(nodes)) }
                let round = try await self.round(
                    "n\(nodes)",
                    nodes: nodes,
                    conversations: conversations,
                    steps: steps,
                    latency: latency
                )
                let rate = round.conversationsPerSecond
                single = single ?? rate
                results += [
                    BenchmarkResult(
                        name: "cluster.nodes_\(nodes).conversations_per_second",
                        value: rate,
                        unit: "conv/s",
                        target: nil
                    ),
                    BenchmarkResult(
                        name: "cluster.nodes_\(nodes).ratio_to_one_node",
                        value: rate / (single ?? rate),
                        unit: "x",
                        target: nil
                    ),
                    BenchmarkResult(
                        name: "cluster.nodes_\(nodes).step.p50",
                        value: SandboxBenchmark.percentile(round.stepMilliseconds, 0.5),
                        unit: "ms",
                        target: nil,
                        lowerIsBetter: true
                    ),
                    BenchmarkResult(
                        name: "cluster.nodes_\(nodes).step.p99",
                        value: SandboxBenchmark.percentile(round.stepMilliseconds, 0.99),
                        unit: "ms",
                        target: nil,
                        lowerIsBetter: true
                    ),
                ]
            }
            let (lost, running) = try await death(conversations: conversations, steps: steps * 2, latency: latency)
            results += [
                BenchmarkResult(name: "cluster.death.node_lease", value: Double(lease), unit: "s", target: nil),
                BenchmarkResult(name: "cluster.death.moved", value: Double(lost.count), unit: "conv", target: nil),
                BenchmarkResult(
                    name: "cluster.death.to_workspace_lost.max",
                    value: lost.max() ?? 0,
                    unit: "s",
                    target: nil,
                    lowerIsBetter: true
                ),
                BenchmarkResult(
                    name: "cluster.death.to_running_again.p50",
                    value: SandboxBenchmark.percentile(running, 0.5),
                    unit: "s",
                    target: nil,
                    lowerIsBetter: true
                ),
                BenchmarkResult(
                    name: "cluster.death.to_running_again.max",
                    value: running.max() ?? 0,
                    unit: "s",
                    target: nil,
                    lowerIsBetter: true
                ),
            ]
            return results
        }

        /// `count` conversations at once over the gateways of nodes 1…`nodes`; their rate and step times.
        func round(
            _ label: String,
            nodes: Int,
            conversations count: Int,
            steps: Int,
            latency: Int
        ) async throws
            -> Round
        {
            let started = Date()
            let ids = try await create(label, nodes: nodes, count: count, steps: steps, latency: latency)
            try await waitFinished(ids, timeout: .seconds(600))
            var ended = started
            var stepTimes: [Double] = []
            for (index, id) in ids.enumerated() {
                let events = try await gateways[index % nodes].events(id)
                let commands = events.filter { $0.action == "run" }.map(\.timestamp)
                stepTimes += zip(commands, commands.dropFirst()).map { $1.timeIntervalSince($0) * 1000 }
                ended = max(ended, events.last { Self.finishes($0) }?.timestamp ?? ended)
            }
            return Round(
                conversationsPerSecond: Double(count) / ended.timeIntervalSince(started),
                stepMilliseconds: stepTimes.sorted()
            )
        }

        /// Conversations over every node; node 3 killed once they are under way. For each conversation whose
        /// sandbox node 3 held: seconds from the kill to the workspace-lost event, and to the first command
        /// that ran after it.
        func death(
            conversations count: Int,
            steps: Int,
            latency: Int
        ) async throws -> (
            lost: [Double], running: [Double]
        ) {
            let ids = try await create("death", nodes: 3, count: count, steps: steps, latency: latency)
            try await eventually("every conversation asked the model twice", timeout: .seconds(300)) {
                (0..<count).allSatisfy { llm.arrivals(model: "bench-death-\($0)") >= 2 }
            }
            let onNode3 = Set(
                try await database.query(
                    """
                    SELECT s.conversation_id::text FROM sandboxes s JOIN conversations c ON c.id = s.conversation_id
                    WHERE s.node = 'node-3' AND s.status = 'running' AND c.agent_state = 'running'
                    """
                ).map { try $0.decode(String.self, 0) }
            )
            let killed = Date()
            try await cluster.run("kill-node", "3")
            try await waitFinished(ids, timeout: .seconds(600))
            var lost: [Double] = []
            var running: [Double] = []
            for (index, id) in ids.enumerated() where onNode3.contains(id) {
                let events = try await gateways[index % 2].events(id)
                guard let notice = events.first(where: { $0.json.serialized.contains("WORKSPACE_LOST") }) else {
                    throw DeckhandError(.internalError, "conversation \(id) lost its sandbox but no event says so")
                }
                lost.append(notice.timestamp.timeIntervalSince(killed))
                if let next = events.first(where: {
                    $0.observation == "run" && ($0.id ?? 0) > (notice.id ?? 0)
                }) {
                    running.append(next.timestamp.timeIntervalSince(killed))
                }
            }
            return (lost, running.sorted())
        }

        func create(_ label: String, nodes: Int, count: Int, steps: Int, latency: Int) async throws -> [String] {
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for index in 0..<count {
                    let model = "bench-\(label)-\(index)"
                    var script = (0..<steps).map { step in
                        var command = FakeLLM.Step.bash("echo \(step) >> /workspace/steps && wc -l < /workspace/steps")
                        command.latencyMilliseconds = latency
                        return command
                    }
                    script.append(.finish("Done."))
                    llm.register(FakeLLM.Script(steps: script), model: model)
                    group.addTask {
                        (index, try await gateways[index % nodes].createConversation("Go.", model: model))
                    }
                }
                var ids = [String](repeating: "", count: count)
                for try await (index, id) in group { ids[index] = id }
                return ids
            }
        }

        func waitFinished(_ ids: [String], timeout: Duration) async throws {
            try await eventually("\(ids.count) conversations finished", timeout: timeout, interval: .milliseconds(250))
            {
                let finished = try await database.query(
                    """
                    SELECT count(*) FROM conversations
                    WHERE id::text = ANY(string_to_array($1, ',')) AND agent_state = 'finished'
                    """,
                    [.text(ids.joined(separator: ","))]
                )
                return try finished.first?.decode(Int.self, 0) == ids.count
            }
        }

        static func finishes(_ event: Event) -> Bool {
            event.observation == "agent_state_changed" && event.extras["agent_state"]?.stringValue == "finished"
        }
    }
}
