import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Gateway
import HTTPClient
import Testing

/// `deckhand runtime-api` against a client written from PROTOCOL.md §D, calling it as OpenHands' `RemoteRuntime`
/// does, over a runtime worker with process sandboxes on the test bed.
@Suite struct RuntimeAPITests {
    /// Calls one runtime API with one `X-API-Key`.
    struct Client: Sendable {
        let base: String
        let key: String?
        let http: HTTPClient

        func call(_ method: HTTPRequest.Method, _ path: String, body: JSONValue? = nil) async throws -> HTTPResponse {
            var request = HTTPRequest(method: method, url: base + path)
            request.timeout = .seconds(60)
            if let key { request.headers.replaceOrAdd(name: "X-API-Key", value: key) }
            if let body {
                request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
                request.body = Array(body.serialized.utf8)
            }
            return try await http.execute(request)
        }

        /// The JSON answer of a call that must answer `expect`.
        func json(
            _ method: HTTPRequest.Method,
            _ path: String,
            body: JSONValue? = nil,
            expect: Int = 200
        )
            async throws -> JSONValue
        {
            let response = try await call(method, path, body: body)
            #expect(response.status == expect, "\(method) \(path): \(response.status) \(response.text)")
            return try JSONValue(parsing: response.body)
        }
    }

    /// Runs a runtime worker and a runtime API (any free port) on a fresh test bed.
    static func withRuntimeAPI(
        _ configure: (inout RuntimeAPISettings) -> Void = { _ in },
        _ body: (TestRuntime, Int) async throws -> Void
    ) async throws {
        try await TestRuntime.with { runtime in
            var settings = RuntimeAPISettings()
            settings.port = 0
            configure(&settings)
            let (ports, announce) = AsyncStream.makeStream(of: Int.self)
            let api = RuntimeAPI(settings: settings, postgres: runtime.postgres, bus: runtime.bus, http: runtime.http) {
                port in
                announce.yield(port)
            }
            try await running(try runtime.makeWorker(), api) {
                var listening = ports.makeAsyncIterator()
                let port = try #require(await listening.next())
                try await body(runtime, port)
            }
        }
    }

    /// What OpenHands' `RemoteRuntime._start_runtime` sends.
    static func startBody(session: String) -> JSONValue {
        [
            "image": "ghcr.io/openhands/runtime:0.62-nikolaik", "command": ["/openhands/micromamba/bin/micromamba"],
            "working_dir": "/openhands/code/", "environment": ["DEBUG": "true"], "session_id": .string(session),
            "resource_factor": 1,
        ]
    }

    /// Start → ready → `/alive` and a command through the URL and key it returned → pause (the sandbox stops
    /// answering) → resume (same workspace) → `/sessions` → `/list` → stop; `/start` twice gives one runtime.
    @Test func aRuntimeStartsAnswersPausesResumesAndStops() async throws {
        try await Self.withRuntimeAPI { runtime, port in
            let key = try await APIKeyStore(postgres: runtime.postgres).create(user: "oh", scope: .runtimeAPI).key
            let client = Client(base: "http://127.0.0.1:\(port)", key: key, http: runtime.http)
            _ = try await client.json(.get, "/sessions/s-1", expect: 404)

            let started = try await client.json(.post, "/start", body: Self.startBody(session: "s-1"))
            let runtimeID = try #require(started["runtime_id"]?.stringValue)
            let url = try #require(started["url"]?.stringValue)
            let sessionKey = try #require(started["session_api_key"]?.stringValue)
            #expect(started["status"]?.stringValue == "running")
            #expect(started["pod_status"]?.stringValue == "ready")
            #expect(started["session_id"]?.stringValue == "s-1")
            #expect(started["work_hosts"] == [:])
            let info = try await client.json(.get, "/runtime/\(runtimeID)")
            #expect(info["runtime_id"]?.stringValue == runtimeID)
            #expect(info["pod_status"]?.stringValue == "ready")
            #expect(info["restart_count"]?.intValue == 0)

            // The sandbox answers at the URL, with the key.
            let alive = try await runtime.http.execute(HTTPRequest(method: .get, url: url + "/alive"))
            #expect(alive.status == 200 && alive.text.contains("ok"))
            let said = try await runtime.run("echo kept > /workspace/note && echo hi", url: url, key: sessionKey)
            #expect(said.contains("hi"))

            // A second /start of the session is the same runtime.
            let again = try await client.json(.post, "/start", body: Self.startBody(session: "s-1"))
            #expect(again["runtime_id"]?.stringValue == runtimeID)
            #expect(again["url"]?.stringValue == url)

            // Paused: the sandbox does not answer; the API says so.
            _ = try await client.json(.post, "/pause", body: ["runtime_id": .string(runtimeID)])
            try await eventually("the runtime is paused", timeout: .seconds(30)) {
                try await client.json(.get, "/runtime/\(runtimeID)")["pod_status"]?.stringValue == "paused"
            }
            #expect(try await client.json(.get, "/sessions/s-1")["status"]?.stringValue == "paused")
            var probe = HTTPRequest(method: .get, url: url + "/alive")
            probe.timeout = .seconds(1)
            let whilePaused = try? await runtime.http.execute(probe)
            #expect(
                whilePaused == nil || whilePaused?.status == 503,
                "a paused sandbox answered \(whilePaused?.status ?? 0)"
            )

            // Resumed: ready again, with its files.
            _ = try await client.json(.post, "/resume", body: ["runtime_id": .string(runtimeID)])
            let resumedURL = try await eventuallyValue("the runtime is ready again", timeout: .seconds(30)) {
                () async throws -> String? in
                let info = try await client.json(.get, "/sessions/s-1")
                return info["pod_status"]?.stringValue == "ready" ? info["url"]?.stringValue : nil
            }
            #expect(try await runtime.run("cat /workspace/note", url: resumedURL, key: sessionKey).contains("kept"))

            let listed = try await client.json(.get, "/list")["runtimes"]?.arrayValue ?? []
            #expect(listed.count == 1)
            #expect(listed.first?["session_id"]?.stringValue == "s-1")
            #expect(listed.first?["runtime_id"]?.stringValue == runtimeID)

            _ = try await client.json(.post, "/stop", body: ["runtime_id": .string(runtimeID)])
            try await eventually("the runtime is stopped", timeout: .seconds(30)) {
                try await client.json(.get, "/sessions/s-1")["status"]?.stringValue == "stopped"
            }
        }
    }

    /// A `/start` of a session whose sandbox server died brings it back in its files (same runtime) rather than
    /// answering with a URL nobody serves.
    @Test func aStartOfARuntimeWhoseServerDiedBringsItBack() async throws {
        try await Self.withRuntimeAPI { runtime, port in
            let key = try await APIKeyStore(postgres: runtime.postgres).create(user: "oh", scope: .runtimeAPI).key
            let client = Client(base: "http://127.0.0.1:\(port)", key: key, http: runtime.http)
            let started = try await client.json(.post, "/start", body: Self.startBody(session: "s-died"))
            let runtimeID = try #require(started["runtime_id"]?.stringValue)
            let first = Self.sandbox(started)
            _ = try await runtime.run("echo kept > /workspace/note", in: try #require(first))
            let sandboxID = try #require(UUID(uuidString: runtimeID))
            let record = try #require(try await runtime.store.sandbox(id: sandboxID))
            let folder = try #require(record.reference)
            try await TestRuntime.killSandboxServer(folder: folder)

            let again = try await client.json(.post, "/start", body: Self.startBody(session: "s-died"))
            #expect(again["runtime_id"]?.stringValue == runtimeID, "the same runtime, brought back")
            let back = try #require(Self.sandbox(again))
            #expect(try await runtime.run("cat /workspace/note", in: back).contains("kept"))
        }
    }

    /// The caller's `environment` reaches the sandbox, also after a stop and a new `/start`; a factor above 1 is
    /// taken (the sandbox is made for it, not taken from the warm pool).
    @Test func theCallersEnvironmentReachesTheSandbox() async throws {
        try await Self.withRuntimeAPI { runtime, port in
            let key = try await APIKeyStore(postgres: runtime.postgres).create(user: "oh", scope: .runtimeAPI).key
            let client = Client(base: "http://127.0.0.1:\(port)", key: key, http: runtime.http)
            var body = Self.startBody(session: "s-env")
            body["environment"] = ["DH_GREETING": "hello-env"]
            body["resource_factor"] = 2
            let started = try await client.json(.post, "/start", body: body)
            let runtimeID = try #require(started["runtime_id"]?.stringValue)
            #expect(
                try await runtime.run("echo $DH_GREETING", in: try #require(Self.sandbox(started))).contains(
                    "hello-env"
                )
            )
            _ = try await client.json(.post, "/stop", body: ["runtime_id": .string(runtimeID)])
            try await eventually("the runtime is stopped", timeout: .seconds(30)) {
                try await client.json(.get, "/sessions/s-env")["status"]?.stringValue == "stopped"
            }
            let again = try await client.json(.post, "/start", body: Self.startBody(session: "s-env"))
            #expect(again["runtime_id"]?.stringValue == runtimeID)
            #expect(
                try await runtime.run("echo $DH_GREETING", in: try #require(Self.sandbox(again))).contains("hello-env")
            )
            let bad = try await client.json(
                .post,
                "/start",
                body: ["image": "x", "session_id": "s-bad", "environment": ["N": 1]],
                expect: 422
            )
            #expect(bad["message"]?.stringValue?.contains("environment.N") == true)
        }
    }

    /// The sandbox a `/start` answer names.
    static func sandbox(_ answer: JSONValue) -> SandboxReady? {
        guard let url = answer["url"]?.stringValue, let key = answer["session_api_key"]?.stringValue,
            let id = answer["runtime_id"]?.stringValue.flatMap(UUID.init(uuidString:))
        else { return nil }
        return SandboxReady(
            conversationID: id,
            sandboxID: id,
            url: url,
            sessionAPIKey: key,
            backend: .process,
            image: "deckhand-sandbox"
        )
    }

    /// Every route but `/alive` wants a runtime-API key: none, a wrong one and a gateway key are each a 401 with a
    /// JSON code; an unknown runtime is a 404; bad bodies are 4xx naming the field; the fixed answers.
    @Test func keysUnknownRuntimesAndBadBodiesAreRefused() async throws {
        try await Self.withRuntimeAPI { runtime, port in
            let keys = APIKeyStore(postgres: runtime.postgres)
            let key = try await keys.create(user: "oh", scope: .runtimeAPI).key
            let gatewayKey = try await keys.create(user: "oh").key
            let base = "http://127.0.0.1:\(port)"
            let routes: [(HTTPRequest.Method, String)] = [
                (.post, "/start"), (.get, "/sessions/s"), (.get, "/runtime/\(UUID())"), (.post, "/pause"),
                (.post, "/resume"), (.post, "/stop"), (.get, "/list"), (.get, "/registry_prefix"),
                (.get, "/image_exists?image=x"),
            ]
            for wrong in [nil, gatewayKey, "dh_" + String(repeating: "0", count: 64)] {
                let client = Client(base: base, key: wrong, http: runtime.http)
                for (method, path) in routes {
                    let answer = try await client.json(method, path, body: method == .post ? [:] : nil, expect: 401)
                    #expect(answer["code"]?.stringValue == "AUTH$UNAUTHORIZED", "\(method) \(path)")
                }
            }
            let client = Client(base: base, key: key, http: runtime.http)
            #expect(try await Client(base: base, key: nil, http: runtime.http).json(.get, "/alive")["status"] == "ok")
            for command in ["/pause", "/resume", "/stop"] {
                let unknown = try await client.json(
                    .post,
                    command,
                    body: ["runtime_id": .string("\(UUID())")],
                    expect: 404
                )
                #expect(unknown["code"]?.stringValue == "RUNTIME$NOT_FOUND")
            }
            _ = try await client.json(.get, "/runtime/not-a-uuid", expect: 404)
            let missing = try await client.json(.post, "/start", body: ["image": "x"], expect: 422)
            #expect(missing["message"]?.stringValue?.contains("session_id") == true)
            let factor = try await client.json(
                .post,
                "/start",
                body: ["image": "x", "session_id": "s", "resource_factor": 3],
                expect: 422
            )
            #expect(factor["message"]?.stringValue?.contains("resource_factor") == true)
            #expect(try await client.json(.get, "/registry_prefix")["registry_prefix"]?.stringValue == "deckhand")
            #expect(try await client.json(.get, "/image_exists?image=any/image:1")["exists"] == true)
            let build = try await client.json(.post, "/build", body: [:], expect: 501)
            #expect(build["code"]?.stringValue == "RUNTIME$BUILD_NOT_OFFERED")
            // Nothing was started by any of it.
            #expect(try await client.json(.get, "/list")["runtimes"]?.arrayValue?.isEmpty == true)
        }
    }

    /// Sessions are per user, and a user holds at most `runtime_api.max_live_runtimes` runtimes.
    @Test func sessionsArePerUserAndLimited() async throws {
        let limited: (inout RuntimeAPISettings) -> Void = { $0.maxLiveRuntimes = 1 }
        try await Self.withRuntimeAPI(limited) { runtime, port in
            let keys = APIKeyStore(postgres: runtime.postgres)
            let alice = Client(
                base: "http://127.0.0.1:\(port)",
                key: try await keys.create(user: "alice", scope: .runtimeAPI).key,
                http: runtime.http
            )
            let bob = Client(
                base: "http://127.0.0.1:\(port)",
                key: try await keys.create(user: "bob", scope: .runtimeAPI).key,
                http: runtime.http
            )
            let first = try await alice.json(.post, "/start", body: Self.startBody(session: "same"))
            let refused = try await alice.json(.post, "/start", body: Self.startBody(session: "other"), expect: 429)
            #expect(refused["code"]?.stringValue == "RUNTIME$TOO_MANY")
            let bobs = try await bob.json(.post, "/start", body: Self.startBody(session: "same"))
            #expect(bobs["runtime_id"] != first["runtime_id"])
            #expect(bobs["url"] != first["url"])
            let runtimeID = try #require(first["runtime_id"]?.stringValue)
            _ = try await bob.json(.get, "/runtime/\(runtimeID)", expect: 404)
            _ = try await bob.json(.post, "/stop", body: ["runtime_id": .string(runtimeID)], expect: 404)
            #expect(try await bob.json(.get, "/list")["runtimes"]?.arrayValue?.count == 1)
        }
    }
}
