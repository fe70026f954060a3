import AMQP
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Gateway
import HTTPClient
import Messaging
import Postgres
import Synchronization
import Testing

/// The gateway's live streams (WebSocket and SSE): replay then live with no gap and no duplicate, reconnects,
/// several gateways, holes in the live feed, slow clients, and a broker outage.
@Suite struct GatewayStreamTests {
    static func isFinished(_ seen: StreamedEvents) -> Bool {
        seen.events.contains {
            $0["observation"] == "agent_state_changed" && $0["extras"]?["agent_state"] == "finished"
        }
    }

    static func storedIDs(_ gateway: TestGateway, _ id: String) async throws -> [Int] {
        let page = try await gateway.json(.get, "/api/conversations/\(id)/events?limit=100")
        guard case .array(let events)? = page["events"] else { return [] }
        return events.compactMap { $0["id"]?.intValue }
    }

    @Test func streamsReplayThenGoLiveInOrderAndResumeWhereTheClientLeftOff() async throws {
        try await TestConversations.with(latency: .milliseconds(100)) { bed in
            let model = bed.scripted([.bash("echo one"), .bash("echo two"), .finish("Done."), .reply("Yes?")])
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                try await bed.withGateway { gateway in
                    let id = try await gateway.createConversation("Go.", model: model)
                    // Connected while the agent runs: part replay, part live.
                    let live = try await gateway.webSocket(id, until: Self.isFinished)
                    let stored = try await Self.storedIDs(gateway, id)
                    let last = try #require(stored.last)
                    #expect(live.ids == Array(0...last))

                    let resumed = try await gateway.webSocket(id, latestEventID: 3) { $0.ids.last == last }
                    #expect(resumed.ids == Array(4...last))
                    let sse = try await gateway.serverSentEvents(id, lastEventID: 5) { $0.ids.last == last }
                    #expect(sse.ids == Array(6...last))
                    let sseAll = try await gateway.serverSentEvents(id) { $0.ids.last == last }
                    #expect(sseAll.ids == stored)

                    // Browsers' ways to present the key.
                    let byQuery = try await gateway.webSocket(id, latestEventID: last - 1, auth: .query) {
                        $0.ids == [last]
                    }
                    #expect(byQuery.ids == [last])
                    let byFrame = try await gateway.webSocket(id, latestEventID: last - 1, auth: .firstFrame) {
                        $0.ids == [last]
                    }
                    #expect(byFrame.ids == [last])
                    let badFrame: JSONValue = ["type": "auth", "api_key": "dh_not-a-key"]
                    let refused = try await gateway.webSocket(id, auth: .key(""), frames: [badFrame.serialized]) { _ in
                        false
                    }
                    #expect(refused.closeCode == 4001)
                    #expect(refused.events.isEmpty)

                    // Another user sees nothing of it on either stream.
                    let other = try await APIKeyStore(postgres: bed.runtime.postgres).create(user: "other-\(UUID())")
                        .key
                    // Refused at the upgrade, not timed out: the error code tells (a timing fails on a loaded machine).
                    let refusal = await #expect(throws: (any Error).self) {
                        _ = try await gateway.webSocket(id, auth: .key(other)) { _ in false }
                    }
                    #expect((refusal as? DeckhandError)?.code != .timeout, "refused at the upgrade, not timed out")
                    let otherFrame: JSONValue = ["type": "auth", "api_key": .string(other)]
                    let hidden = try await gateway.webSocket(id, auth: .key(""), frames: [otherFrame.serialized]) { _ in
                        false
                    }
                    #expect(hidden.closeCode == 4004)
                    #expect(hidden.events.isEmpty)
                    let sseOther = try await gateway.request(.get, "/api/conversations/\(id)/events/stream", key: other)
                    #expect(sseOther.status == 404)

                    // A client may act over the socket: a bad frame gets an error frame, a message runs the agent.
                    let acted = try await gateway.webSocket(
                        id,
                        latestEventID: last,
                        frames: [#"{"action":"dance"}"#, #"{"action":"message","args":{"content":"More?"}}"#]
                    ) { seen in
                        seen.events.contains { $0["extras"]?["agent_state"] == "awaiting_user_input" }
                    }
                    #expect(acted.other.first?["code"] == "REQUEST$INVALID_FIELD")
                    #expect(acted.events.first?["args"]?["content"] == "More?")
                    #expect(acted.ids == Array((last + 1)...(last + acted.ids.count)))
                }
            }
        }
    }

    @Test func aClientOnOneGatewaySeesConversationsCreatedThroughAnother() async throws {
        try await TestConversations.with(latency: .milliseconds(20)) { bed in
            let workers = [
                try bed.makeRuntimeWorker(), try bed.makeRuntimeWorker(),
            ]
            try await running(workers[0], workers[1], bed.makeWorker(), bed.makeWorker()) {
                try await bed.withGateway { a in
                    try await bed.withGateway { b in
                        var ids: [String] = []
                        for index in 0..<3 {
                            let model = "two-\(index)-\(UUID().uuidString.prefix(8))"
                            bed.llm.register(
                                .init(steps: [.bash("echo \(index)"), .finish("Done \(index).")]),
                                model: model
                            )
                            let created = try await b.json(
                                .post,
                                "/api/conversations",
                                body: ["initial_user_msg": "Go.", "llm_model": .string(model)]
                            )
                            ids.append(try #require(created["conversation_id"]?.stringValue))
                        }
                        try await withThrowingTaskGroup(of: (String, [Int]).self) { group in
                            for id in ids {
                                group.addTask { (id, try await a.webSocket(id, until: Self.isFinished).ids) }
                            }
                            for try await (id, seen) in group {
                                let stored = try await Self.storedIDs(b, id)
                                #expect(seen == stored, "conversation \(id)")
                                #expect(seen == Array(0..<seen.count))
                            }
                        }
                    }
                }
            }
        }
    }

    @Test func numConnectionsCountsTheClientsOfEveryGateway() async throws {
        try await TestConversations.with { bed in
            try await bed.withGateway { a in
                try await bed.withGateway { b in
                    let id = try await a.createConversation("watched")
                    let conversation = try #require(UUID(uuidString: id))
                    // Two clients on gateway a, one on b: each gateway says 3. Each client leaves once it has an
                    // event.
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for gateway in [a, a, b] {
                            group.addTask {
                                _ = try await gateway.webSocket(id, timeout: .seconds(120)) { !$0.events.isEmpty }
                            }
                        }
                        try await Self.waitForConnections(a, id, 3)
                        try await Self.waitForConnections(b, id, 3)
                        let body = try await Self.commitEvent(bed, conversation, id: 0)
                        try await Self.publish(bed, conversation, id: 0, body: body)
                        try await group.waitForAll()
                    }
                    try await Self.waitForConnections(a, id, 0)
                    try await Self.waitForConnections(b, id, 0)
                }
            }
        }
    }

    /// Writes an event row as a worker would (committed), without publishing it.
    static func commitEvent(_ bed: TestConversations, _ conversation: UUID, id: Int) async throws -> String {
        let payload: JSONValue = [
            "id": .number(Double(id)), "source": "agent", "action": "think", "message": "thinking",
            "args": ["thought": .string("step \(id)")], "timestamp": "2026-11-28T12:00:00",
        ]
        try await bed.runtime.postgres.execute(
            "INSERT INTO events (conversation_id, id, source, kind, payload) VALUES ($1, $2, 'agent', 'think', $3)",
            [.uuid(conversation), .int(Int64(id)), .jsonb(payload.serialized)]
        )
        return payload.serialized
    }

    static func publish(_ bed: TestConversations, _ conversation: UUID, id: Int, body: String) async throws {
        try await bed.runtime.bus.publishConversationEvent(conversation, event: id, json: Array(body.utf8))
    }

    @Test func aHoleInTheLiveFeedIsFilledFromPostgreSQLAndCopiesAreDropped() async throws {
        try await TestConversations.with { bed in
            try await bed.withGateway { gateway in
                let created = try await gateway.json(.post, "/api/conversations", body: [:])
                let text = try #require(created["conversation_id"]?.stringValue)
                let id = try #require(UUID(uuidString: text))
                for event in 0...2 { _ = try await Self.commitEvent(bed, id, id: event) }
                let (replayed, signal) = AsyncStream<Void>.makeStream()
                let client = Task {
                    try await gateway.webSocket(text) { seen in
                        if seen.ids == [0, 1, 2] { signal.yield() }
                        return seen.ids.last == 5
                    }
                }
                var iterator = replayed.makeAsyncIterator()
                await iterator.next()
                // 3 and 4 committed, only 4 published (the worker died before publishing 3).
                _ = try await Self.commitEvent(bed, id, id: 3)
                let four = try await Self.commitEvent(bed, id, id: 4)
                try await Self.publish(bed, id, id: 4, body: four)
                // A redelivered step publishes 4 again; then 5 comes.
                try await Self.publish(bed, id, id: 4, body: four)
                let five = try await Self.commitEvent(bed, id, id: 5)
                try await Self.publish(bed, id, id: 5, body: five)
                let seen = try await client.value
                #expect(seen.ids == [0, 1, 2, 3, 4, 5])
            }
        }
    }

    @Test func aClientThatStopsReadingIsCutOffAndReleased() async throws {
        try await TestConversations.with { bed in
            let settings = TestConversations.gatewaySettings { $0.streamBuffer = 4 }
            try await bed.withGateway(settings: settings) { gateway in
                let created = try await gateway.json(.post, "/api/conversations", body: [:])
                let text = try #require(created["conversation_id"]?.stringValue)
                let id = try #require(UUID(uuidString: text))
                let port = try #require(Int(gateway.baseURL.split(separator: ":").last ?? ""))
                let stalled = try await StalledWebSocket.open(
                    port: port,
                    path: "/sockets/events/\(text)",
                    key: gateway.key
                )
                try await Self.waitForConnections(gateway, text, 1)
                // 400 events of 64 KiB, published live: far more than the socket buffers and the 4 buffered.
                let padding = String(repeating: "x", count: 64 << 10)
                for event in 0..<400 {
                    let body: JSONValue = [
                        "id": .number(Double(event)), "source": "agent", "action": "think",
                        "args": ["thought": .string(padding)],
                    ]
                    try await Self.publish(bed, id, id: event, body: body.serialized)
                }
                try await Self.waitForConnections(gateway, text, 0)
                withExtendedLifetime(stalled) {}
            }
        }
    }

    static func waitForConnections(_ gateway: TestGateway, _ id: String, _ count: Int) async throws {
        let describe: () async -> String = {
            "\((try? await gateway.json(.get, "/api/conversations/\(id)"))?["num_connections"] ?? .null)"
        }
        try await eventually("num_connections of \(id) at \(count)", interval: .milliseconds(50), describe: describe) {
            try await gateway.json(.get, "/api/conversations/\(id)")["num_connections"]?.intValue == count
        }
    }

    @Test func aBrokerOutageAnswers503AndLosesNoAcceptedCommand() async throws {
        try await TestConversations.with { bed in
            let model = "outage-\(UUID().uuidString.prefix(8))"
            bed.llm.register(
                .init(steps: [.reply("first"), .reply("second"), .reply("third")], sequential: true),
                model: model
            )
            let url = try TestAMQP.url
            let proxy = try TCPProxy.start(targetHost: url.host, targetPort: url.port)
            defer { proxy.stop() }
            let name = "gw-outage-\(UUID().uuidString.prefix(8))"
            let proxied = try await TestAMQP.connect(name: name) { $0.url.port = proxy.port }
            let bus = CommandBus(connection: proxied, topology: bed.runtime.topology)
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                try await bed.withGateway(bus: bus) { gateway in
                    let id = try await gateway.createConversation("m0", model: model)
                    _ = try await GatewayTests.waitForState(gateway, id, ["awaiting_user_input"])
                    let before = try await Self.storedIDs(gateway, id)
                    let watcher = Task {
                        try await gateway.webSocket(id, latestEventID: before.last) { seen in
                            seen.events.filter { $0["extras"]?["agent_state"] == "awaiting_user_input" }.count == 1
                        }
                    }
                    // The stream is open before the outage (a handshake that raced the cut found no broker).
                    try await Self.waitForConnections(gateway, id, 1)

                    proxy.sever()
                    try await eventually("the gateway sees the broker gone", timeout: .seconds(20)) {
                        !proxied.status.connected
                    }
                    let refused = try await gateway.request(
                        .post,
                        "/api/conversations/\(id)/message",
                        body: #"{"message":"lost?"}"#
                    )
                    #expect(refused.status == 503)
                    #expect(refused.headers["retry-after"] == "2")
                    #expect(try JSONValue(parsing: refused.body)["code"] == "SERVICE$UNAVAILABLE")
                    let notCreated = try await gateway.request(
                        .post,
                        "/api/conversations",
                        body: #"{"initial_user_msg":"x"}"#
                    )
                    #expect(notCreated.status == 503)
                    let listed = try await gateway.json(.get, "/api/conversations")
                    #expect(listed["results"].map { if case .array(let items) = $0 { items.count } else { 0 } } == 1)
                    let health = try await gateway.request(.get, "/health")
                    #expect(health.status == 503)
                    #expect(
                        try JSONValue(parsing: health.body)["dependencies"]?["rabbitmq"]?["status"] == "unavailable"
                    )

                    proxy.restore()
                    try await eventually("healthy again", interval: .milliseconds(50)) {
                        try await gateway.request(.get, "/health").status == 200
                    }
                    let sent = try await gateway.json(
                        .post,
                        "/api/conversations/\(id)/message",
                        body: ["message": "m1"]
                    )
                    #expect(sent == ["success": true])
                    let seen = try await watcher.value
                    #expect(seen.ids == Array((before.last! + 1)...(before.last! + seen.ids.count)))
                    let messages = try await bed.events(try #require(UUID(uuidString: id)))
                        .filter { $0.source == .user && $0.action == "message" }.map { $0.args["content"]?.stringValue }
                    #expect(messages == ["m0", "m1"])
                }
            }
            await proxied.close()
        }
    }

    @Test func aDatabaseOutageAnswers503AndTheGatewayRecovers() async throws {
        try await TestConversations.with { bed in
            let (proxy, proxied) = try TCPProxy.inFront(of: bed.runtime.postgresURL)
            defer { proxy.stop() }
            let postgres = PostgresClient(
                url: proxied,
                poolSize: 4,
                acquireTimeout: .seconds(2),
                connectTimeout: .seconds(2)
            )
            try await bed.withGateway(postgres: postgres) { gateway in
                let id = try await gateway.createConversation("hi")
                proxy.sever()
                let refused = try await gateway.request(.get, "/api/conversations/\(id)")
                #expect(refused.status == 503, "\(refused.text)")
                #expect(refused.headers["retry-after"] == "2")
                #expect(try JSONValue(parsing: refused.body)["code"] == "SERVICE$UNAVAILABLE")
                #expect(!refused.text.contains("deckhand:deckhand"), "no connection detail leaks")
                let notCreated = try await gateway.request(
                    .post,
                    "/api/conversations",
                    body: #"{"initial_user_msg":"x"}"#
                )
                #expect(notCreated.status == 503)
                let health = try await gateway.request(.get, "/health")
                #expect(health.status == 503)
                #expect(try JSONValue(parsing: health.body)["dependencies"]?["postgresql"]?["status"] == "unavailable")

                proxy.restore()
                try await eventually("the conversation readable again", interval: .milliseconds(100)) {
                    try await gateway.request(.get, "/api/conversations/\(id)").status == 200
                }
                let listed = try await gateway.json(.get, "/api/conversations")
                #expect(listed["results"].map { if case .array(let items) = $0 { items.count } else { 0 } } == 1)
            }
            await postgres.close()
        }
    }
}
