import AMQP
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Gateway
import HTTPClient
import HTTPTypes
import HummingbirdWSClient
import Logging
import Messaging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The gateway: message ingest over HTTP, a two-step conversation end to end, idle WebSocket clients'
/// memory, and events fanned out to many subscribers. A `deckhand gateway` process serves the first, third
/// and fourth; the second runs gateway and workers in this process with the scripted model.
enum GatewayBenchmark {
    static func run(
        requests: Int,
        concurrency: Int,
        endToEndRuns: Int,
        idleClients: Int,
        subscribers: Int,
        events: Int
    ) async throws -> [BenchmarkResult] {
        raiseFileLimit()
        var results = try await gatewayProcess(
            requests: requests,
            concurrency: concurrency,
            idleClients: idleClients,
            subscribers: subscribers,
            events: events
        )
        results += try await endToEnd(runs: endToEndRuns)
        return results
    }

    /// Lets this process (and the gateway it starts) hold thousands of sockets.
    static func raiseFileLimit() {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = min(limit.rlim_max, 65_536)
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    static func percentile(_ values: [Double], _ fraction: Double) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
    }

    // MARK: A gateway process

    static func gatewayProcess(
        requests: Int,
        concurrency: Int,
        idleClients: Int,
        subscribers: Int,
        events: Int
    ) async throws -> [BenchmarkResult] {
        try await TestConversations.with { bed in
            let port = try TestEnvironment.freePort()
            let process = try bed.runtime.launchDeckhand(
                ["gateway", "--namespace", bed.runtime.namespace, "--port", String(port)],
                // Load from one user: no per-user caps.
                variables: [
                    "DECKHAND_LOG_LEVEL": "warning", "DECKHAND_GATEWAY_MAX_RUNNING_CONVERSATIONS": "0",
                    "DECKHAND_GATEWAY_MAX_LIVE_SANDBOXES": "0", "DECKHAND_LLM_USER_MODELS": "*",
                ],
                log: bed.runtime.processRoot + "-gateway.log"
            )
            defer { if process.isRunning { process.terminate() } }
            let key = try await APIKeyStore(postgres: bed.runtime.postgres).create(userID: bed.userID).key
            let gateway = TestGateway(baseURL: "http://127.0.0.1:\(port)", key: key, http: bed.runtime.http)
            let deadline = ContinuousClock.now + .seconds(60)
            while (try? await gateway.request(.get, "/alive").status) != 200 {
                guard ContinuousClock.now < deadline, process.isRunning else {
                    throw DeckhandError(.unavailable, "the gateway did not start")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Task.sleep(for: .seconds(1))
            var results = [
                BenchmarkResult(
                    name: "gateway.rss.started",
                    value: Double(SandboxBenchmark.residentMemory(pid: process.processIdentifier)) / 1_048_576,
                    unit: "MiB",
                    target: nil
                )
            ]
            results += try await ingest(gateway, bed: bed, requests: requests, concurrency: concurrency)
            results += try await fanOut(gateway, bed: bed, subscribers: subscribers, events: events)
            results += try await idle(gateway, bed: bed, pid: process.processIdentifier, clients: idleClients)
            return results
        }
    }

    static func createConversation(_ gateway: TestGateway) async throws -> String {
        let created = try await gateway.json(.post, "/api/conversations", body: [:])
        guard let id = created["conversation_id"]?.stringValue else {
            throw DeckhandError(.protocolViolation, "no conversation id in \(created)")
        }
        return id
    }

    /// `POST …/message` from `concurrency` tasks, each answered once the command is confirmed.
    static func ingest(
        _ gateway: TestGateway,
        bed: TestConversations,
        requests: Int,
        concurrency: Int
    ) async throws
        -> [BenchmarkResult]
    {
        let id = try await createConversation(gateway)
        let request = HTTPRequest(
            method: .post,
            url: gateway.baseURL + "/api/conversations/\(id)/message",
            headers: ["Authorization": "Bearer \(gateway.key)", "Content-Type": "application/json"],
            body: Array(#"{"message":"benchmark message"}"#.utf8),
            timeout: .seconds(30)
        )
        _ = try await HTTPBenchmark.drive(gateway.http, request, concurrency: concurrency, requests: concurrency * 20)
        let started = ContinuousClock.now
        let latencies = try await HTTPBenchmark.drive(
            gateway.http,
            request,
            concurrency: concurrency,
            requests: requests
        ).map(\.milliseconds)
        let elapsed = ContinuousClock.now - started
        _ = try await bed.runtime.connection.purge(queue: bed.runtime.topology.conversationQueue)
        return [
            BenchmarkResult(
                name: "gateway.ingest.req_per_s.c\(concurrency)",
                value: Double(requests) / elapsed.seconds,
                unit: "req/s",
                target: 8_000
            ),
            BenchmarkResult(name: "gateway.ingest.p50", value: percentile(latencies, 0.5), unit: "ms", target: nil),
            BenchmarkResult(
                name: "gateway.ingest.p99",
                value: percentile(latencies, 0.99),
                unit: "ms",
                target: 25,
                lowerIsBetter: true
            ),
        ]
    }

    /// A WebSocket client that counts the frames it receives; `opened` when its handler runs.
    final class Counter: Sendable {
        let opened = Atomic(0)
        let frames = Atomic(0)
        let finished = Atomic(0)
    }

    static func connect(
        _ gateway: TestGateway,
        _ conversation: String,
        counter: Counter,
        expect: Int?
    ) async throws {
        var headers = HTTPFields()
        headers[.authorization] = "Bearer \(gateway.key)"
        let url =
            gateway.baseURL.replacingOccurrences(of: "http://", with: "ws://")
            + "/sockets/events/\(conversation)?latest_event_id=-1"
        let fields = headers
        try await WebSocketClient.connect(
            url: url,
            configuration: .init(maxFrameSize: 1 << 20, additionalHeaders: fields),
            logger: Logger(label: "bench.websocket")
        ) { inbound, _, _ in
            counter.opened.add(1, ordering: .relaxed)
            var seen = 0
            for try await _ in inbound.messages(maxSize: 1 << 20) {
                counter.frames.add(1, ordering: .relaxed)
                seen += 1
                if let expect, seen == expect {
                    counter.finished.add(1, ordering: .relaxed)
                    return
                }
            }
        }
    }

    static func waitFor(
        _ what: String,
        timeout: Duration = .seconds(120),
        _ condition: () async throws -> Bool
    )
        async throws
    {
        let deadline = ContinuousClock.now + timeout
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw DeckhandError(.timeout, "\(what) within \(timeout)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// `subscribers` WebSocket clients on one conversation; `events` events published in order on the events
    /// exchange (as a worker publishes them); the time until every client has every event.
    static func fanOut(
        _ gateway: TestGateway,
        bed: TestConversations,
        subscribers: Int,
        events: Int
    ) async throws
        -> [BenchmarkResult]
    {
        let id = try await createConversation(gateway)
        let counter = Counter()
        let clients = (0..<subscribers).map { _ in
            Task { try await connect(gateway, id, counter: counter, expect: events) }
        }
        try await waitFor("\(subscribers) subscribers") {
            try await gateway.json(.get, "/api/conversations/\(id)")["num_connections"]?.intValue == subscribers
        }
        let padding = String(repeating: "x", count: 400)
        guard let conversation = UUID(uuidString: id) else { throw DeckhandError(.protocolViolation, "bad id \(id)") }
        let started = ContinuousClock.now
        for event in 0..<events {
            let body: JSONValue = [
                "id": .number(Double(event)), "source": "agent", "action": "think", "message": "",
                "args": ["thought": .string(padding)], "timestamp": "2026-11-28T12:00:00",
            ]
            try await bed.runtime.bus.publishConversationEvent(
                conversation,
                event: event,
                json: Array(body.serialized.utf8)
            )
        }
        let published = ContinuousClock.now - started
        try await waitFor("every event at every subscriber") {
            counter.finished.load(ordering: .relaxed) == subscribers
        }
        let elapsed = ContinuousClock.now - started
        for client in clients { _ = try? await client.value }
        return [
            BenchmarkResult(
                name: "gateway.fanout.events_per_s.\(subscribers)_subscribers",
                value: Double(events * subscribers) / elapsed.seconds,
                unit: "events/s",
                target: nil
            ),
            BenchmarkResult(
                name: "gateway.fanout.published_per_s",
                value: Double(events) / published.seconds,
                unit: "events/s",
                target: nil
            ),
        ]
    }

    /// The gateway's memory with `clients` idle WebSocket clients (ten per conversation).
    static func idle(
        _ gateway: TestGateway,
        bed: TestConversations,
        pid: Int32,
        clients: Int
    ) async throws
        -> [BenchmarkResult]
    {
        try await Task.sleep(for: .seconds(1))
        let before = SandboxBenchmark.residentMemory(pid: pid)
        var conversations: [String] = []
        for _ in 0..<max(1, clients / 10) { conversations.append(try await createConversation(gateway)) }
        let counter = Counter()
        var tasks: [Task<Void, any Error>] = []
        for index in 0..<clients {
            let conversation = conversations[index % conversations.count]
            tasks.append(Task { try await connect(gateway, conversation, counter: counter, expect: nil) })
            if index % 100 == 99 { try await Task.sleep(for: .milliseconds(50)) }
        }
        try await waitFor("\(clients) idle clients") { counter.opened.load(ordering: .relaxed) == clients }
        try await Task.sleep(for: .seconds(2))
        let after = SandboxBenchmark.residentMemory(pid: pid)
        for task in tasks { task.cancel() }
        return [
            BenchmarkResult(
                name: "gateway.rss.after_load",
                value: Double(before) / 1_048_576,
                unit: "MiB",
                target: nil
            ),
            BenchmarkResult(
                name: "gateway.rss.\(clients)_websockets",
                value: Double(after) / 1_048_576,
                unit: "MiB",
                target: nil
            ),
            BenchmarkResult(
                name: "gateway.rss.per_websocket",
                value: Double(after - before) / Double(clients) / 1024,
                unit: "KiB",
                target: nil
            ),
        ]
    }

    // MARK: End to end

    /// A scripted two-step conversation (a command, then finish) from `POST /api/conversations` to the
    /// `finished` event on a WebSocket: gateway, workers and a warm process-sandbox pool in this process, a
    /// model that answers at once. With `remote`, the sandboxes are a Runtime API's (a warm pool of its runtimes).
    static func endToEnd(
        runs: Int,
        remote: RemoteSettings? = nil,
        name: String = "gateway.end_to_end"
    ) async throws
        -> [BenchmarkResult]
    {
        try await TestConversations.with { bed in
            let runtimeWorker =
                try remote.map { remote in
                    try bed.runtime.makeWorker(
                        settings: TestRuntime.settings {
                            $0.warmPool = [.init(backend: .remote, image: $0.image, size: 2)]
                        },
                        backends: [.remote],
                        remote: remote
                    )
                } ?? bed.makeRuntimeWorker(warm: 2)
            let conversationWorker = bed.makeWorker(sandboxBackend: remote == nil ? .process : .remote)
            return try await running(runtimeWorker, conversationWorker) {
                try await bed.withGateway { gateway in
                    try await Task.sleep(for: .seconds(2))
                    var durations: [Double] = []
                    for run in 0..<(runs + 2) {
                        let model = "e2e-\(run)-\(UUID().uuidString.prefix(6))"
                        bed.llm.register(.init(steps: [.bash("echo run \(run)"), .finish("Done.")]), model: model)
                        let started = ContinuousClock.now
                        let created = try await gateway.json(
                            .post,
                            "/api/conversations",
                            body: ["initial_user_msg": "Run it.", "llm_model": .string(model)]
                        )
                        guard let id = created["conversation_id"]?.stringValue else { continue }
                        let seen = try await gateway.webSocket(id) { seen in
                            seen.events.contains { $0["extras"]?["agent_state"] == "finished" }
                        }
                        let elapsed = ContinuousClock.now - started
                        guard seen.events.contains(where: { $0["action"] == "finish" }) else {
                            throw DeckhandError(.protocolViolation, "run \(run) did not finish")
                        }
                        // The first two warm the caches; the pool refills between runs.
                        if run >= 2 { durations.append(elapsed.milliseconds) }
                        try await Task.sleep(for: .milliseconds(400))
                    }
                    return [
                        BenchmarkResult(
                            name: "\(name).two_steps.p50",
                            value: percentile(durations, 0.5),
                            unit: "ms",
                            target: remote == nil ? 150 : nil,
                            lowerIsBetter: true
                        ),
                        BenchmarkResult(
                            name: "\(name).two_steps.p90",
                            value: percentile(durations, 0.9),
                            unit: "ms",
                            target: nil
                        ),
                    ]
                }
            }
        }
    }
}
