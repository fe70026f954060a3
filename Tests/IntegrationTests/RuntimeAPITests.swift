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
        backends: [RuntimeSettings.Backend] = [.process],
        worker: RuntimeSettings = TestRuntime.settings(),
        docker: DockerSettings = TestRuntime.dockerSettings,
        api: RuntimeAPISettings = RuntimeAPISettings(),
        _ body: (TestRuntime, Int) async throws -> Void
    ) async throws {
        try await TestRuntime.with { runtime in
            var settings = api
            settings.port = 0
            let (ports, announce) = AsyncStream.makeStream(of: Int.self)
            let api = RuntimeAPI(settings: settings, postgres: runtime.postgres, bus: runtime.bus, http: runtime.http) {
                port in
                announce.yield(port)
            }
            try await running(try runtime.makeWorker(settings: worker, backends: backends, docker: docker), api) {
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

    /// An image that `runtime_api.image_map` runs as given, on Docker: the container runs the caller's command
    /// (here Deckhand's sandbox image started by hand on port 60000, as OpenHands' runtime images start their own
    /// server) in the caller's working folder, as the image's user with a writable root, and the URL is that
    /// port's; a stop and a new `/start` bring it back with its files. An image the engine does not have fails the
    /// start, naming the image.
    @Test func anImageMappedAsGivenRunsTheCallersCommandOnDocker() async throws {
        let image = TestRuntime.sandboxImage
        var api = RuntimeAPISettings()
        api.imageMap = [.init(image, .asGiven(port: 60000)), .init("deckhand-test/*", .asGiven(port: 60000))]
        try await Self.withRuntimeAPI(backends: [.docker], api: api) { runtime, port in
            let docker = TestDocker(client: runtime.http)
            guard try await docker.imageExists(image) else {
                throw DeckhandError(
                    .unavailable,
                    "the sandbox image \(image) does not exist: run deploy/sandbox/build-offline.sh"
                )
            }
            let key = try await APIKeyStore(postgres: runtime.postgres).create(user: "oh", scope: .runtimeAPI).key
            let client = Client(base: "http://127.0.0.1:\(port)", key: key, http: runtime.http)
            var body = Self.startBody(session: "s-given")
            body["image"] = .string(image)
            body["command"] = [
                "/usr/local/bin/deckhand-sandbox", "--host", "0.0.0.0", "--port", "60000", "--working-dir", "/srv",
            ]
            body["working_dir"] = "/tmp"
            let started = try await client.json(.post, "/start", body: body)
            let runtimeID = try #require(started["runtime_id"]?.stringValue)
            let sandbox = try #require(Self.sandbox(started))
            #expect(try await runtime.run("pwd; id -u; echo kept > /srv/note", in: sandbox) == "/srv\n0")
            let record = try #require(try await runtime.store.sandbox(id: sandbox.sandboxID))
            #expect(record.image == image)
            let inspected = try await docker.inspect(try #require(record.reference))
            #expect(inspected["Config"]?["Entrypoint"] == ["/usr/local/bin/deckhand-sandbox"])
            #expect(inspected["Config"]?["WorkingDir"] == "/tmp")
            #expect(inspected["Config"]?["Labels"]?["deckhand.port"] == "60000")
            #expect(inspected["HostConfig"]?["Privileged"] == .bool(false))
            #expect(inspected["HostConfig"]?["SecurityOpt"] == ["no-new-privileges"])
            #expect(inspected["HostConfig"]?["ReadonlyRootfs"] == .bool(false))
            #expect(inspected["HostConfig"]?["Memory"] == .number(Double(512 << 20)))
            #expect(sandbox.url.hasPrefix("http://127.0.0.1:"))

            _ = try await client.json(.post, "/stop", body: ["runtime_id": .string(runtimeID)])
            try await eventually("the runtime is stopped", timeout: .seconds(60)) {
                try await client.json(.get, "/sessions/s-given")["status"]?.stringValue == "stopped"
            }
            let again = try await client.json(.post, "/start", body: body)
            #expect(again["runtime_id"]?.stringValue == runtimeID)
            #expect(try await runtime.run("cat /srv/note", in: try #require(Self.sandbox(again))) == "kept")

            var absent = Self.startBody(session: "s-absent")
            absent["image"] = "deckhand-test/absent:1"
            let failed = try await client.json(.post, "/start", body: absent, expect: 502)
            #expect(failed["code"]?.stringValue == "RUNTIME$START_FAILED")
            #expect(failed["message"]?.stringValue?.contains("deckhand-test/absent:1 does not exist") == true)
        }
    }

    /// Process sandboxes run only Deckhand's server: a start of an image mapped as given fails and says why.
    @Test func processSandboxesRefuseAnImageAsGiven() async throws {
        var api = RuntimeAPISettings()
        api.imageMap = [.init("*", .asGiven(port: 60000))]
        try await Self.withRuntimeAPI(api: api) { runtime, port in
            let key = try await APIKeyStore(postgres: runtime.postgres).create(user: "oh", scope: .runtimeAPI).key
            let client = Client(base: "http://127.0.0.1:\(port)", key: key, http: runtime.http)
            let failed = try await client.json(.post, "/start", body: Self.startBody(session: "s-proc"), expect: 502)
            #expect(
                failed["message"]?.stringValue?.contains("process sandboxes run only Deckhand's sandbox server") == true
            )
            // The default map gives OpenHands' own runtime images to Deckhand's sandbox server.
            #expect(RuntimeAPISettings().target(for: "ghcr.io/openhands/runtime:0.62-nikolaik") == .sandbox)
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
        var limited = RuntimeAPISettings()
        limited.maxLiveRuntimes = 1
        try await Self.withRuntimeAPI(api: limited) { runtime, port in
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
