import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Postgres
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Fault drills on a cluster of `deploy/cluster.sh` (three Deckhand nodes, a 3-node RabbitMQ cluster, PostgreSQL
/// with a streaming standby) under conversations of a scripted model: a node killed, a broker node stopped and
/// the database failed over while they run; a node cut off by a partition and healed. One at a time: a cluster
/// has fixed ports.
@Suite(.serialized) struct ClusterDrillTests {
    /// Every node's settings: any model name picks a script, no per-user caps, a node taken for dead after 10 s
    /// without renewing its lease.
    static func settings(llm: String) -> [String: String] {
        [
            "DECKHAND_LLM_BASE_URL": llm, "DECKHAND_LLM_API_KEY": "sk-drill-key", "DECKHAND_LLM_USER_MODELS": "*",
            "DECKHAND_LLM_RETRY_MIN": "20ms", "DECKHAND_LLM_RETRY_MAX": "500ms",
            "DECKHAND_GATEWAY_MAX_RUNNING_CONVERSATIONS": "0", "DECKHAND_GATEWAY_MAX_LIVE_SANDBOXES": "0",
            "DECKHAND_RUNTIME_NODE_LEASE": "10s", "DECKHAND_LOG_LEVEL": "info",
        ]
    }

    /// `steps` steps that each append a line to `/workspace/<tag>.log` and count its lines, then one that prints
    /// it, then `finish`: the printed file shows whether a step's command ran twice.
    static func script(tag: String, steps: Int, latency: Int) -> FakeLLM.Script {
        var script = (0..<steps).map { index in
            var step = FakeLLM.Step.bash(
                "echo \(tag)-\(index) >> /workspace/\(tag).log && wc -l < /workspace/\(tag).log"
            )
            step.latencyMilliseconds = latency
            return step
        }
        script.append(.bash("cat /workspace/\(tag).log"))
        script.append(.finish("Done."))
        return FakeLLM.Script(steps: script)
    }

    /// The message each conversation was sent and the gateway accepted.
    final class Accepted: Sendable {
        private let notes = Mutex<[String: String]>([:])
        func record(_ note: String, for conversation: String) { notes.withLock { $0[conversation] = note } }
        func note(_ conversation: String) -> String? { notes.withLock { $0[conversation] } }
        var count: Int { notes.withLock { $0.count } }
    }

    struct Drilled: Sendable {
        var id: String
        var tag: String
        /// The gateway (1…) it was created on.
        var node: Int
    }

    /// 3 nodes, 40 conversations spread over every gateway, each streamed by a client of a gateway that
    /// survives; while they run, node 3 is SIGKILLed (its sandboxes with it), RabbitMQ node 1 is stopped and the
    /// PostgreSQL standby is promoted, and every conversation is sent a message meanwhile. Then: every
    /// conversation finished, event ids contiguous, every stream saw every event in order, no command ran twice,
    /// every accepted message is in its conversation, a conversation whose sandbox died went on in a new one and
    /// says so, and no sandbox runs that the database does not know.
    @Test func fortyConversationsSurviveANodeKilledABrokerStoppedAndAFailover() async throws {
        let llm = FakeLLM()
        try await llm.serve { base in
            try await TestCluster.with(settings: Self.settings(llm: base)) { cluster in
                try await Self.drill(cluster, llm: llm)
            }
        }
    }

    static func drill(_ cluster: TestCluster, llm: FakeLLM) async throws {
        let count = 40
        let steps = 8
        let http = try HTTPClient()
        let key = try await cluster.createKey(user: "drill")
        let gateways = (1...cluster.nodes).map { TestGateway(baseURL: cluster.gatewayURL($0), key: key, http: http) }
        var conversations: [Drilled] = []
        for index in 0..<count {
            let tag = "c\(index)"
            llm.register(Self.script(tag: tag, steps: steps, latency: 300), model: "drill-\(tag)")
            let node = index % cluster.nodes + 1
            let id = try await gateways[node - 1].createConversation("Write the lines.", model: "drill-\(tag)")
            conversations.append(Drilled(id: id, tag: tag, node: node))
        }
        // A client per conversation on a gateway that survives (nodes 1 and 2), reconnecting from the last event it
        // saw when its socket closes, until the agent has finished.
        let streams = conversations.enumerated().map { index, conversation in
            Task { try await Self.follow(conversation.id, on: gateways[index % 2]) }
        }

        // Faults, once every conversation is under way.
        try await eventually("every conversation asked the model twice", timeout: .seconds(240)) {
            conversations.allSatisfy { llm.arrivals(model: "drill-\($0.tag)") >= 2 }
        }
        let database = PostgresClient(url: cluster.postgresURL, poolSize: 1)
        defer { Task { await database.close() } }
        let onNode3 = Set(
            try await database.query(
                "SELECT conversation_id::text FROM sandboxes WHERE node = 'node-3' AND status NOT IN ('lost', 'error')"
                    + " AND conversation_id IS NOT NULL"
            ).map { try $0.decode(String.self, 0) }
        )
        let killedAt = Date()
        try await cluster.run("kill-node", "3")
        let accepted = Accepted()
        // Messages go to the surviving gateways while the faults happen; a refused one (503) is sent again.
        let (firstNotes, secondNotes) = (Array(conversations.prefix(count / 2)), Array(conversations.suffix(count / 2)))
        let firstHalf = Task { try await Self.sendMessages(firstNotes, gateways, accepted) }
        try await cluster.run("stop-broker", "1")
        let afterBroker = try await Self.timeToServe(gateways[1], llm: llm, tag: "probe-broker")
        let secondHalf = Task { try await Self.sendMessages(secondNotes, gateways, accepted) }
        try await cluster.run("promote")
        let afterPromote = try await Self.timeToServe(gateways[0], llm: llm, tag: "probe-promote")
        try await firstHalf.value
        try await secondHalf.value

        // Every conversation finished, with its message, its events whole and in order.
        var events = 0
        var moved = 0
        var duplicates = 0
        var backAfter: [Double] = []
        for (index, conversation) in conversations.enumerated() {
            let note = try #require(accepted.note(conversation.id))
            // Where a conversation that did not finish stands, for the next person who sees it.
            let describe: () async -> String = {
                let events = (try? await gateways[index % 2].events(conversation.id)) ?? []
                let tail = events.suffix(8).map { event in
                    event.typeName
                        + (event.observation == "agent_state_changed"
                            ? "(\(event.extras["agent_state"]?.stringValue ?? "?"))" : "")
                }
                return "\(events.count) events, state \(Self.agentState(events) ?? "?"), last: "
                    + tail.joined(separator: ", ") + "; created on node \(conversation.node)"
            }
            let stored = try await eventuallyValue(
                "\(conversation.tag) finished with its message",
                timeout: .seconds(300),
                describe: describe
            ) {
                () async throws -> [Event]? in
                let stored = try await gateways[index % 2].events(conversation.id)
                let finished = Self.agentState(stored) == "finished"
                return finished && stored.contains { $0.action == "message" && $0.args["content"]?.stringValue == note }
                    ? stored : nil
            }
            events += stored.count
            #expect(stored.map { $0.id ?? -1 } == Array(0..<stored.count), "\(conversation.tag): ids not contiguous")
            #expect(stored.filter { $0.action == "message" && $0.args["content"]?.stringValue == note }.count == 1)
            // Every command ran once: one observation each, and the printed file has no line twice.
            for action in stored where action.action == "run" {
                #expect(
                    stored.filter { $0.cause == action.id }.count == 1,
                    "\(conversation.tag): action \(action.id ?? -1)"
                )
            }
            let printed = stored.last {
                $0.observation == "run" && $0.extras["command"]?.stringValue?.hasPrefix("cat ") == true
            }
            let lines = try #require(printed, "\(conversation.tag) printed its file").content
                .split(separator: "\n").map(String.init).filter { $0.hasPrefix(conversation.tag + "-") }
            duplicates += lines.count - Set(lines).count
            // A conversation whose sandbox died with node 3 says its workspace was lost, in a new sandbox.
            let lost = stored.first { $0.json.serialized.contains("WORKSPACE_LOST") }
            if onNode3.contains(conversation.id) {
                moved += 1
                let lost = try #require(lost, "\(conversation.tag) lost its sandbox with node 3 and says so")
                backAfter.append(lost.timestamp.timeIntervalSince(killedAt))
            }
            // The client saw every event up to the agent's end, in order.
            let streamed = try await streams[index].value
            #expect(streamed == Array(0..<streamed.count), "\(conversation.tag): stream \(streamed.prefix(40))")
            #expect(streamed.count <= stored.count && !streamed.isEmpty)
        }
        #expect(duplicates == 0)
        #expect(moved > 0, "node 3 held none of the sandboxes")

        // No sandbox runs that the database does not know (node 3's died with it).
        let live = Set(
            try await database.query(
                "SELECT backend_ref FROM sandboxes WHERE status IN ('warm', 'starting', 'running', 'paused')"
            ).compactMap { try $0.decode(String?.self, 0) }
        )
        let running = Self.runningSandboxes(cluster)
        let leaked = running.subtracting(live)
        #expect(leaked.isEmpty, "sandboxes running that the database does not know: \(leaked.sorted())")
        // And the check sees them: every sandbox the database counts as live runs.
        #expect(live.subtracting(running).isEmpty, "live in the database, not running: \(live.subtracting(running))")
        backAfter.sort()
        print(
            "cluster drill: \(count) conversations finished, \(events) events, duplicates \(duplicates), lost 0 "
                + "(\(accepted.count) messages kept), leaked \(leaked.count) (\(running.count) sandboxes "
                + "running), \(moved) moved, running again \(String(format: "%.1f", backAfter.first ?? 0))–"
                + "\(String(format: "%.1f", backAfter.last ?? 0)) s after the kill; a new conversation served "
                + "\(Self.seconds(afterBroker)) s after a broker node stopped, \(Self.seconds(afterPromote)) s after the promotion"
        )
    }

    /// Node 3 is cut off while conversations run (its processes and sandboxes send nothing that arrives). Its
    /// sandboxes are given up on once its lease lapses and their conversations go on in new ones elsewhere; none
    /// is handed out twice (a lost sandbox never counts as live again); after healing, node 3 removes the ones the
    /// database gave up on. Faults are detected faster than by default (operator settings): AMQP heartbeats and
    /// TCP keepalives of 5 s, actions given up after 20 s.
    @Test func aPartitionedNodesSandboxesAreGivenUpOnceAndRemovedAfterHealing() async throws {
        let llm = FakeLLM()
        try await llm.serve { base in
            var settings = Self.settings(llm: base)
            settings["DECKHAND_AMQP_HEARTBEAT"] = "5s"
            settings["DECKHAND_POSTGRES_KEEPALIVES_IDLE"] = "5s"
            settings["DECKHAND_AGENT_ACTION_TIMEOUT"] = "20s"
            try await TestCluster.with(settings: settings) { cluster in
                try await Self.partition(cluster, llm: llm)
            }
        }
    }

    static func partition(_ cluster: TestCluster, llm: FakeLLM) async throws {
        let count = 12
        let http = try HTTPClient()
        let key = try await cluster.createKey(user: "drill")
        let gateways = (1...2).map { TestGateway(baseURL: cluster.gatewayURL($0), key: key, http: http) }
        var conversations: [Drilled] = []
        for index in 0..<count {
            let tag = "p\(index)"
            llm.register(Self.script(tag: tag, steps: 12, latency: 300), model: "drill-\(tag)")
            let id = try await gateways[index % 2].createConversation("Write the lines.", model: "drill-\(tag)")
            conversations.append(Drilled(id: id, tag: tag, node: index % 2 + 1))
        }
        let database = PostgresClient(url: cluster.postgresURL, poolSize: 1)
        defer { Task { await database.close() } }
        // Cut node 3 off once it holds sandboxes of running conversations.
        let onNode3 = try await eventuallyValue("node 3 runs sandboxes of conversations", timeout: .seconds(240)) {
            () async throws -> [(sandbox: String, folder: String)]? in
            guard conversations.allSatisfy({ llm.arrivals(model: "drill-\($0.tag)") >= 2 }) else { return nil }
            let rows = try await database.query(
                "SELECT id::text, backend_ref FROM sandboxes WHERE node = 'node-3' AND status = 'running'"
                    + " AND conversation_id IS NOT NULL"
            ).map { (try $0.decode(String.self, 0), try $0.decode(String.self, 1)) }
            return rows.isEmpty ? nil : rows
        }
        // (The check after healing sees them while they run.)
        #expect(Set(onNode3.map(\.folder)).isSubset(of: Self.runningSandboxes(cluster)))
        try await cluster.run("partition", "3")

        // Every conversation finishes on nodes 1 and 2; node 3's sandboxes are lost, and stay lost.
        for (index, conversation) in conversations.enumerated() {
            let stored = try await eventuallyValue("\(conversation.tag) finished", timeout: .seconds(360)) {
                () async throws -> [Event]? in
                let stored = try await gateways[index % 2].events(conversation.id)
                return Self.agentState(stored) == "finished" ? stored : nil
            }
            #expect(stored.map { $0.id ?? -1 } == Array(0..<stored.count), "\(conversation.tag): ids not contiguous")
        }
        let ids = onNode3.map(\.sandbox)
        func statuses() async throws -> [String] {
            try await database.query(
                "SELECT status FROM sandboxes WHERE id::text = ANY(string_to_array($1, ','))",
                [.text(ids.joined(separator: ","))]
            )
            .map { try $0.decode(String.self, 0) }
        }
        #expect(try await statuses().allSatisfy { $0 == "lost" }, "node 3's sandboxes are given up on")
        let live = try await database.query(
            """
            SELECT conversation_id::text, count(*) FROM sandboxes
            WHERE status IN ('starting', 'running', 'paused') AND conversation_id IS NOT NULL
            GROUP BY conversation_id HAVING count(*) > 1
            """
        )
        #expect(live.isEmpty, "a conversation has two live sandboxes")

        // Healed, node 3 hears that it was taken for dead and removes what it still runs of them.
        try await cluster.run("heal")
        try await eventually("node 3 removed the sandboxes given up on", timeout: .seconds(120)) {
            Self.runningSandboxes(cluster).isDisjoint(with: onNode3.map(\.folder))
        }
        #expect(try await statuses().allSatisfy { $0 == "lost" }, "a given-up sandbox never comes back")
        print(
            "cluster partition: \(count) conversations finished, \(onNode3.count) sandboxes on node 3 given up on "
                + "once and removed after healing"
        )
    }

    /// Sends each conversation a message, through a surviving gateway, until one is accepted (a 503 while a
    /// fault is under way is not: it is sent again); records what each was told.
    static func sendMessages(
        _ conversations: [Drilled],
        _ gateways: [TestGateway],
        _ accepted: Accepted
    ) async throws {
        for (index, conversation) in conversations.enumerated() {
            let note = "note-\(conversation.tag)"
            let body: JSONValue = ["message": .string(note)]
            try await eventually("a message to \(conversation.tag) is accepted", timeout: .seconds(180)) {
                let response = try? await gateways[index % 2].request(
                    .post,
                    "/api/conversations/\(conversation.id)/message",
                    body: body.serialized
                )
                guard let response else { return false }
                if response.status / 100 == 2 { return true }
                #expect(response.status == 503, "\(conversation.tag): \(response.status) \(response.text)")
                return false
            }
            accepted.record(note, for: conversation.id)
        }
    }

    /// How long after now a new conversation created on `gateway` (created again while refused) reaches the model.
    static func timeToServe(_ gateway: TestGateway, llm: FakeLLM, tag: String) async throws -> Duration {
        let start = ContinuousClock.now
        llm.register(Self.script(tag: tag, steps: 0, latency: 0), model: "drill-\(tag)")
        try await eventually("a conversation is created after the fault", timeout: .seconds(120)) {
            (try? await gateway.createConversation("Go.", model: "drill-\(tag)")) != nil
        }
        try await eventually("the new conversation reaches the model", timeout: .seconds(120)) {
            llm.arrivals(model: "drill-\(tag)") > 0
        }
        return ContinuousClock.now - start
    }

    /// Follows a conversation's events over WebSocket until the agent finishes, reconnecting from the last event
    /// seen when the gateway closes the socket; returns the ids seen, in the order they came.
    static func follow(_ conversation: String, on gateway: TestGateway) async throws -> [Int] {
        var ids: [Int] = []
        try await eventually(
            "the stream of \(conversation) saw the agent finish",
            timeout: .seconds(420),
            interval: .milliseconds(500)
        ) {
            let seen = try? await gateway.webSocket(
                conversation,
                latestEventID: ids.last,
                timeout: .seconds(420)
            ) { seen in seen.events.contains { Self.finishes($0) } }
            let events = seen?.events ?? []
            ids += events.compactMap { $0["id"]?.intValue }
            return events.contains(where: Self.finishes)
        }
        return ids
    }

    static func seconds(_ duration: Duration) -> String {
        let (whole, fraction) = duration.components
        return String(format: "%.2f", Double(whole) + Double(fraction) / 1e18)
    }

    static func finishes(_ event: JSONValue) -> Bool {
        event["observation"]?.stringValue == "agent_state_changed"
            && event["extras"]?["agent_state"]?.stringValue == "finished"
    }

    /// The agent state the last `agent_state_changed` says.
    static func agentState(_ events: [Event]) -> String? {
        events.last { $0.observation == "agent_state_changed" }?.extras["agent_state"]?.stringValue
    }

    /// The folders of the process sandboxes whose server runs, on every node (its pid file, `<pid> <start time>`,
    /// names a process of the node's cgroup).
    static func runningSandboxes(_ cluster: TestCluster) -> Set<String> {
        var running: Set<String> = []
        let files = FileManager.default
        for node in 1...cluster.nodes {
            let root = "\(cluster.state)/node-\(node)/sandboxes"
            let procs = cluster.cgroupProcesses(node: node)
            // `<workspace_root>/<deployment>/<sandbox id>`
            let folders = ((try? files.contentsOfDirectory(atPath: root)) ?? []).flatMap { deployment in
                ((try? files.contentsOfDirectory(atPath: "\(root)/\(deployment)")) ?? []).map {
                    "\(root)/\(deployment)/\($0)"
                }
            }
            for path in folders {
                guard let text = try? String(contentsOfFile: path + "/pid", encoding: .utf8),
                    let first = text.split(whereSeparator: \.isWhitespace).first, let pid = Int32(first),
                    procs.contains(pid)
                else { continue }
                running.insert(path)
            }
        }
        return running
    }
}
