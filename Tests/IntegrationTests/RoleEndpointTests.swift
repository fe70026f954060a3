import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Messaging
import Testing

/// Each worker role's own endpoint (`metrics.port`): `/alive`, `/health` (503 when a dependency is cut) and
/// `/metrics`, read by Prometheus' own parser, with the families an operator scales and alerts on.
@Suite struct RoleEndpointTests {
    static func get(_ http: HTTPClient, _ url: String) async throws -> HTTPResponse {
        var request = HTTPRequest(url: url)
        request.timeout = .seconds(10)
        return try await http.execute(request)
    }

    /// Waits until the role's endpoint answers `/alive`; failing, says what the role logged.
    static func waitForEndpoint(_ http: HTTPClient, _ base: String, log: () -> String) async throws {
        do {
            try await eventually("the role serves /alive at \(base)", timeout: .seconds(60)) {
                (try? await get(http, base + "/alive"))?.status == 200
            }
        } catch {
            throw DeckhandError(.timeout, "\(error)\n--- the role's log:\n\(log().suffix(3000))")
        }
    }

    /// The label sets of a family, as the parser read them.
    static func labels(_ family: PrometheusText.Family?) -> [[String: String]] {
        (family?.labels ?? []).compactMap { text in
            guard case .object(let object)? = try? JSONValue(parsing: text) else { return nil }
            return object.compactMapValues(\.stringValue)
        }
    }

    /// `deckhand runtime-worker` with `metrics.port`: alive, healthy, and after a provision its metrics hold the
    /// provision (by backend and outcome), the warm pool, its queues' depth and consumers, the broker
    /// connection and the PostgreSQL pool.
    @Test func aRuntimeWorkerServesItsHealthAndMetrics() async throws {
        try await TestRuntime.with { runtime in
            let port = try TestEnvironment.freePort()
            let worker = try runtime.launchWorkerProcess(environment: ["DECKHAND_METRICS_PORT": "\(port)"])
            defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
            let base = "http://127.0.0.1:\(port)"
            try await Self.waitForEndpoint(runtime.http, base) { runtime.workerProcessLog }
            let health = try await Self.get(runtime.http, base + "/health")
            #expect(health.status == 200, "\(health.text)")
            let ready = try await runtime.provisioned(UUID())
            #expect(try await runtime.run("echo measured", in: ready) == "measured")

            let metrics = try await Self.get(runtime.http, base + "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
            let families = try await PrometheusText.families(metrics.text)
            let provisions = Self.labels(families["deckhand_sandbox_provisions"])
            #expect(families["deckhand_sandbox_provisions"]?.type == "counter")
            #expect(provisions.contains { $0["backend"] == "process" && $0["outcome"] == "ready" }, "\(provisions)")
            #expect(
                Self.labels(families["deckhand_warm_pool_sandboxes"]).contains { $0["backend"] == "process" },
                "\(families.keys.sorted())"
            )
            let queues = Self.labels(families["deckhand_queue_consumers"]).compactMap { $0["queue"] }
            #expect(queues.contains(runtime.topology.runtimeQueue), "\(queues)")
            let waited = Self.labels(families["deckhand_queue_wait_seconds"]).compactMap { $0["queue"] }
            #expect(waited.contains(runtime.topology.runtimeQueue), "\(families.keys.sorted())")
            for gauge in [
                "deckhand_queue_messages", "deckhand_queue_consumers", "deckhand_amqp_connected",
                "deckhand_postgres_pool_connections", "deckhand_postgres_pool_waiting", "deckhand_warm_pool_sandboxes",
            ] {
                #expect(families[gauge]?.type == "gauge", "\(gauge): \(families.keys.sorted())")
            }
            for counter in ["deckhand_amqp_reconnects", "deckhand_postgres_pool_waits"] {
                #expect(families[counter]?.type == "counter", "\(counter): \(families.keys.sorted())")
            }
        }
    }

    /// `deckhand conversation-worker` with `metrics.port`: after a conversation of the scripted model, its
    /// metrics hold the steps and their phases, the model calls and their tokens, and its queue; and when its
    /// PostgreSQL is cut, `/health` says so with a 503 (and comes back).
    @Test func aConversationWorkerServesItsMetricsAndItsHealthFollowsItsDatabase() async throws {
        try await TestConversations.with { bed in
            let port = try TestEnvironment.freePort()
            let (proxy, url) = try TCPProxy.inFront(of: bed.runtime.postgresURL)
            defer { proxy.stop() }
            let worker = try bed.launchWorkerProcess(
                name: "observed",
                environment: ["DECKHAND_METRICS_PORT": "\(port)", "DECKHAND_POSTGRES_URL": url]
            )
            defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
            let base = "http://127.0.0.1:\(port)"
            try await Self.waitForEndpoint(bed.runtime.http, base) { bed.workerProcessLog("observed") }
            try await running(try bed.makeRuntimeWorker()) {
                let id = try await bed.start(script: FakeLLM.Script(steps: [.bash("echo observed"), .finish("Done.")]))
                try await bed.waitFor(id, [.finished])
            }
            let families = try await PrometheusText.families(
                try await Self.get(bed.runtime.http, base + "/metrics").text
            )
            let parts = Self.labels(families["deckhand_step_seconds"]).compactMap { $0["part"] }
            #expect(Set(parts).isSuperset(of: ["total", "llm", "sandbox", "overhead"]), "\(families.keys.sorted())")
            let phases = Self.labels(families["deckhand_step_phase_seconds"]).compactMap { $0["phase"] }
            #expect(Set(phases).isSuperset(of: ["lock", "load", "decide", "act", "finish"]), "\(phases)")
            #expect(families["deckhand_model_calls"]?.type == "counter")
            #expect(Self.labels(families["deckhand_model_calls"]).contains { $0["outcome"] == "ok" })
            let tokens = Self.labels(families["deckhand_model_tokens"]).compactMap { $0["kind"] }
            #expect(Set(tokens) == ["prompt", "completion"], "\(tokens)")
            let queues = Self.labels(families["deckhand_queue_messages"]).compactMap { $0["queue"] }
            #expect(
                Set(queues) == [bed.runtime.topology.conversationQueue, bed.runtime.topology.deadQueue],
                "\(queues)"
            )
            // How long its deliveries waited in the queue: the age an alert watches.
            let waited = Self.labels(families["deckhand_queue_wait_seconds"]).compactMap { $0["queue"] }
            #expect(waited.contains(bed.runtime.topology.conversationQueue), "\(families.keys.sorted())")

            #expect(try await Self.get(bed.runtime.http, base + "/health").status == 200)
            proxy.sever()
            try await eventually("/health reports PostgreSQL cut", timeout: .seconds(30)) {
                let health = try await Self.get(bed.runtime.http, base + "/health")
                return health.status == 503 && health.text.contains("\"postgresql\"")
                    && health.text.contains("unavailable")
            }
            proxy.restore()
            try await eventually("/health recovers", timeout: .seconds(30)) {
                try await Self.get(bed.runtime.http, base + "/health").status == 200
            }
        }
    }
}
