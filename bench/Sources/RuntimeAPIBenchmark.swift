import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Gateway
import HTTPClient
import RuntimeManager

/// `deckhand runtime-api` in this process over a runtime worker with process sandboxes: `POST /start` of a new
/// session until it answers ready, then the first `echo` through the URL and key it returned, cold (a sandbox
/// made for the start) and from a warm pool; then the gateway's two-step conversation end to end with its
/// sandboxes from that API (a second stack whose runtime worker uses the `remote` backend).
enum RuntimeAPIBenchmark {
    static func run(starts: Int, pool: Int, endToEndRuns: Int) async throws -> [BenchmarkResult] {
        try await TestRuntime.with { provider in
            let key = try await APIKeyStore(postgres: provider.postgres).create(user: "bench", scope: .runtimeAPI).key
            var settings = RuntimeAPISettings()
            settings.port = 0
            settings.maxLiveRuntimes = 0
            let (ports, announce) = AsyncStream.makeStream(of: Int.self)
            let api = RuntimeAPI(
                settings: settings,
                postgres: provider.postgres,
                bus: provider.bus,
                http: provider.http
            ) {
                announce.yield($0)
            }
            return try await running(api) {
                var listening = ports.makeAsyncIterator()
                guard let port = await listening.next() else { throw DeckhandError(.internalError, "no port") }
                let base = "http://127.0.0.1:\(port)"
                var results: [BenchmarkResult] = []
                try await running(try provider.makeWorker()) {
                    results += try await measure("runtime_api.cold", provider, base: base, key: key, count: starts) {}
                }
                let warmSettings = TestRuntime.settings {
                    $0.warmPool = [.init(backend: .process, image: RuntimeSettings.processImage, size: pool)]
                }
                try await running(try provider.makeWorker(settings: warmSettings)) {
                    results += try await measure("runtime_api.warm", provider, base: base, key: key, count: starts) {
                        try await eventually("the pool is full", timeout: .seconds(60)) {
                            try await provider.store.all().filter { $0.status == .warm }.count >= pool
                        }
                    }
                    var remote = RemoteSettings()
                    remote.url = base
                    remote.apiKey = key
                    results += try await GatewayBenchmark.endToEnd(
                        runs: endToEndRuns,
                        remote: remote,
                        name: "runtime_api.end_to_end.remote"
                    )
                }
                return results
            }
        }
    }

    /// `count` starts of new sessions, each timed to its answer and to its first echo; `before` runs untimed
    /// ahead of each.
    static func measure(
        _ name: String,
        _ provider: TestRuntime,
        base: String,
        key: String,
        count: Int,
        before: () async throws -> Void
    ) async throws -> [BenchmarkResult] {
        var started: [Double] = []
        var echoed: [Double] = []
        for _ in 0..<count {
            try await before()
            let begin = ContinuousClock.now
            var request = HTTPRequest(method: .post, url: base + "/start")
            request.headers.replaceOrAdd(name: "X-API-Key", value: key)
            request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
            let body: JSONValue = ["image": "any", "session_id": .string(UUID().uuidString)]
            request.body = Array(body.serialized.utf8)
            let answer = try JSONValue(parsing: try await provider.http.execute(request).expectSuccess().body)
            let ready = ContinuousClock.now
            guard let url = answer["url"]?.stringValue, let sessionKey = answer["session_api_key"]?.stringValue,
                let runtimeID = answer["runtime_id"]?.stringValue, let owner = UUID(uuidString: runtimeID)
            else { throw DeckhandError(.protocolViolation, "a /start answered \(answer.serialized)") }
            guard try await provider.run("echo hi", url: url, key: sessionKey).contains("hi") else {
                throw DeckhandError(.protocolViolation, "the first echo did not answer hi")
            }
            started.append((ready - begin).milliseconds)
            echoed.append((ContinuousClock.now - begin).milliseconds)
            if let record = try await provider.store.liveSandbox(conversation: owner) {
                try await provider.send(.destroy, sandbox: record.id)
            }
        }
        started.sort()
        echoed.sort()
        return [
            BenchmarkResult(
                name: "\(name).start.p50",
                value: SandboxBenchmark.percentile(started, 0.5),
                unit: "ms",
                target: nil
            ),
            BenchmarkResult(
                name: "\(name).start.p99",
                value: SandboxBenchmark.percentile(started, 0.99),
                unit: "ms",
                target: nil
            ),
            BenchmarkResult(
                name: "\(name).start_to_first_echo.p50",
                value: SandboxBenchmark.percentile(echoed, 0.5),
                unit: "ms",
                target: nil
            ),
            BenchmarkResult(
                name: "\(name).start_to_first_echo.p99",
                value: SandboxBenchmark.percentile(echoed, 0.99),
                unit: "ms",
                target: nil
            ),
        ]
    }
}
