import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import HTTPClient
import Logging
import RuntimeBackends
import RuntimeManager
import Synchronization
import Testing

/// The `modal` backend against a fake of Modal's API (scripts/modal/fake_modal.py: gRPC over h2c on loopback,
/// requests decoded by Modal's own classes, sandboxes that are `deckhand-sandbox` processes).
@Suite struct ModalBackendTests {
    static func backend(_ runtime: TestRuntime, _ settings: ModalSettings) -> ModalBackend {
        ModalBackend(
            settings: settings,
            deployment: runtime.namespace,
            http: runtime.http,
            logger: Logger(label: "test.modal")
        )
    }

    /// Create (app, image, secret, sandbox with its tags and tunnel) → start (the tunnel's URL) → commands run
    /// with the spec's key → listed by its tag → pause keeps it running → stop ends it (missing after) → destroy
    /// of an ended sandbox is no error; every call carries Modal's metadata.
    @Test func theBackendDrivesASandboxThroughItsLife() async throws {
        try await FakeModal.with { fake in
            try await TestRuntime.with { runtime in
                let backend = Self.backend(runtime, fake.settings)
                let spec = SandboxSpec(
                    id: UUID(),
                    image: "deckhand/sandbox:0.1.0",
                    sessionAPIKey: "key-\(UUID())",
                    environment: ["FROM_SPEC": "yes"]
                )
                let reference = try await backend.create(spec)
                #expect(reference.hasPrefix("sb-"))
                let started = try await backend.start(reference, spec: spec)
                #expect(started.sessionAPIKey == nil, "the key is Deckhand's")
                #expect(
                    try await runtime.run("echo $FROM_SPEC; pwd", url: started.url, key: spec.sessionAPIKey)
                        .hasPrefix("yes\n")
                )
                #expect(try await backend.inspect(reference) == .running)
                #expect(
                    try await backend.list() == [
                        ListedSandbox(sandboxID: spec.id, reference: reference, state: .running)
                    ]
                )

                try await backend.pause(reference)
                #expect(try await backend.inspect(reference) == .running, "Modal has no pause: it keeps running")
                try await backend.stop(reference)
                #expect(try await backend.inspect(reference) == .missing, "a stopped Modal sandbox is gone")
                #expect(try await backend.list().isEmpty)
                try await backend.destroy(reference)
                #expect(try await backend.inspect("sb-NotAModalSandboxAtAll1") == .missing)

                let create = try #require(try fake.calls("SandboxCreate").first?["request"])
                #expect(create["definition"]?["open_ports"]?["ports"]?.arrayValue?.first?["port"] == 8000)
                #expect(
                    create["definition"]?["entrypoint_args"]?.arrayValue?.first == "/usr/local/bin/deckhand-sandbox"
                )
                #expect(create["definition"]?["resources"]?["memory_mb"] == 512)
                #expect(
                    create["tags"]
                        == [
                            ["tag_name": "deckhand.deployment", "tag_value": .string(runtime.namespace)],
                            ["tag_name": "deckhand.sandbox", "tag_value": .string(spec.id.uuidString.lowercased())],
                        ]
                )
                let secret = try #require(try fake.calls("SecretGetOrCreate").first?["request"])
                #expect(secret["object_creation_type"] == "OBJECT_CREATION_TYPE_EPHEMERAL")
                #expect(secret["env_dict"]?["SESSION_API_KEY"] != nil)
                let image = try #require(try fake.calls("ImageGetOrCreate").first?["request"])
                #expect(image["image"]?["dockerfile_commands"] == ["FROM registry.example.com/deckhand/sandbox:test"])
                for call in try fake.calls() {
                    #expect(call["client_type"] == "9", "\(call)")
                    #expect(call["client_version"] == "1.0.0")
                    #expect(call["token_id_ok"] == true)
                    #expect(call["idempotency_key"]?.stringValue?.isEmpty == false)
                }
                // The app and the image are asked for once per backend.
                #expect(try fake.calls("AppGetOrCreate").count == 1)
                #expect(try fake.calls("ImageGetOrCreate").count == 1)
            }
        }
    }

    /// A runtime worker on `modal`: the conversation's sandbox is a Modal sandbox, answered `sandbox_ready`
    /// with its tunnel's URL; a pause keeps it answering, and asking again hands it out with its files.
    @Test func aRuntimeWorkerProvisionsFromModal() async throws {
        try await FakeModal.with { fake in
            try await TestRuntime.with { runtime in
                let worker = try runtime.makeWorker(backends: [.modal], modal: fake.settings)
                try await running(worker) {
                    let conversation = UUID()
                    let ready = try await runtime.provisioned(conversation)
                    #expect(ready.backend == .modal)
                    #expect(try await runtime.run("echo m > f && cat f", in: ready) == "m")
                    try await runtime.send(.pause, sandbox: ready.sandboxID)
                    try await eventually("the sandbox is recorded paused") {
                        try await runtime.store.sandbox(id: ready.sandboxID)?.status == .paused
                    }
                    let again = try await runtime.provisioned(conversation)
                    #expect(again.sandboxID == ready.sandboxID)
                    #expect(try await runtime.run("cat f", in: again) == "m")
                    #expect(try fake.calls("SandboxCreate").count == 1)
                }
            }
        }
    }

    /// `UNAVAILABLE` twice, then an answer: the same call, with one idempotency key and a rising attempt.
    @Test func anUnavailableCallIsTriedAgainWithTheSameIdempotencyKey() async throws {
        try await FakeModal.with(faults: ["unavailable": ["AppGetOrCreate": 2]]) { fake in
            try await TestRuntime.with { runtime in
                let backend = Self.backend(runtime, fake.settings)
                let spec = SandboxSpec(id: UUID(), image: "deckhand/sandbox:0.1.0", sessionAPIKey: "k")
                let reference = try await backend.create(spec)
                let calls = try fake.calls("AppGetOrCreate")
                #expect(calls.count == 3)
                #expect(Set(calls.compactMap { $0["idempotency_key"]?.stringValue }).count == 1, "\(calls)")
                #expect(calls.map { $0["attempt"] } == ["0", "1", "2"])
                #expect(calls[0]["retry_delay"] == .null && calls[2]["retry_delay"]?.stringValue != nil)
                try await backend.destroy(reference)
            }
        }
    }

    /// A refused token is a clear error naming the settings, asked once (not a retry loop); a status that is
    /// not transient (`ALREADY_EXISTS`, trailers-only) is final; an unknown sandbox is missing.
    @Test func refusalsAreFinalAndSayWhy() async throws {
        try await FakeModal.with(faults: ["status": ["SandboxCreate": [6, "Sandbox with name 'x' already exists"]]]) {
            fake in
            try await TestRuntime.with { runtime in
                var wrong = fake.settings
                wrong.tokenSecret = "as-wrong"
                let refused = await #expect(throws: DeckhandError.self) {
                    try await Self.backend(runtime, wrong).create(
                        SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "k")
                    )
                }
                #expect(refused?.code == .runtimeModal)
                #expect(
                    refused?.message.contains("modal.token_id and modal.token_secret") == true,
                    "\(String(describing: refused))"
                )
                #expect(refused?.message.contains("as-wrong") == false, "the secret is never in a message")
                let asked = try fake.calls("AppGetOrCreate").count
                #expect(asked == 1, "a refused token is not tried again")

                let exists = await #expect(throws: DeckhandError.self) {
                    try await Self.backend(runtime, fake.settings).create(
                        SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "k")
                    )
                }
                #expect(exists?.code == "GRPC$ALREADY_EXISTS", "\(String(describing: exists))")
                let creates = try fake.calls("SandboxCreate").count
                #expect(creates == 1)
                let unknown = try await Self.backend(runtime, fake.settings).inspect("sb-unknown")
                #expect(unknown == .missing)
            }
        }
    }

    /// A sandbox whose tunnel never appears, and one whose entrypoint exits while starting: the worker answers
    /// `sandbox_failed` with a reason that says which.
    @Test func aTunnelThatNeverAppearsOrAnEntrypointThatExitsFailsTheProvisionWithAReason() async throws {
        for (faults, expected) in [
            (["tunnel_never": true] as JSONValue, "opened no tunnel to port 8000"),
            (["exit_on_start": 3] as JSONValue, "ended while starting (status failure, exit code 3"),
        ] {
            try await FakeModal.with(faults: faults) { fake in
                try await TestRuntime.with { runtime in
                    var settings = fake.settings
                    settings.startTimeout = .seconds(2)
                    let worker = try runtime.makeWorker(
                        settings: TestRuntime.settings { $0.commandRetryFor = .zero },
                        backends: [.modal],
                        modal: settings
                    )
                    try await running(worker) {
                        let conversation = UUID()
                        try await runtime.provision(conversation)
                        let reply = try await runtime.reply(for: conversation)
                        let failed = try #require(reply.failed, "expected sandbox_failed, got \(reply)")
                        #expect(failed.reason.contains(expected), "\(failed.reason)")
                    }
                }
            }
        }
    }

    /// Modal builds the image: the build's stream cut in the middle of a message is joined again, and a call
    /// slower than its deadline is `DEADLINE_EXCEEDED`, tried again, and in the end an outage.
    @Test func aCutBuildStreamIsJoinedAgainAndASlowCallMeetsItsDeadline() async throws {
        try await FakeModal.with(faults: ["image_building": 1, "cut_image_stream": true]) { fake in
            try await TestRuntime.with { runtime in
                let backend = Self.backend(runtime, fake.settings)
                let spec = SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "k")
                let reference = try await backend.create(spec)
                #expect(try fake.calls("ImageJoinStreaming").count == 2, "joined again after the cut")
                try await backend.destroy(reference)
            }
        }
        try await FakeModal.with(faults: ["slow": ["AppGetOrCreate": 3.0]]) { fake in
            try await TestRuntime.with { runtime in
                var settings = fake.settings
                settings.requestTimeout = .milliseconds(500)
                settings.retryFor = .milliseconds(800)
                let slow = await #expect(throws: DeckhandError.self) {
                    try await Self.backend(runtime, settings).create(
                        SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "k")
                    )
                }
                #expect(slow?.code == .timeout, "\(String(describing: slow))")
                #expect(slow?.message.contains("DEADLINE_EXCEEDED") == true)
                let tries = try fake.calls("AppGetOrCreate").count
                #expect(tries >= 2, "a deadline that passed is tried again")
            }
        }
    }

    /// `"runtime": "modal"` through the gateway: a conversation of the scripted model runs its command in a
    /// Modal sandbox (the fake's), and stopping the conversation terminates it.
    @Test func aConversationThroughTheGatewayRunsOnModal() async throws {
        try await TestConversations.with { bed in
            try await FakeModal.with { fake in
                let runtimeWorker = try bed.runtime.makeWorker(backends: [.process, .modal], modal: fake.settings)
                try await running(runtimeWorker, bed.makeWorker()) {
                    try await bed.withGateway { gateway in
                        let model = "modal-\(UUID().uuidString.prefix(8))"
                        bed.llm.register(
                            .init(steps: [.bash("echo on-modal > note && cat note"), .finish("Done.")]),
                            model: model
                        )
                        let created = try await gateway.json(
                            .post,
                            "/api/conversations",
                            body: ["initial_user_msg": "Go.", "llm_model": .string(model), "runtime": "modal"]
                        )
                        let id = try #require(
                            created["conversation_id"]?.stringValue.flatMap(UUID.init(uuidString:)),
                            "\(created)"
                        )
                        try await bed.waitFor(id, [.finished])
                        let runs = try await bed.events(id).filter { $0.observation == "run" }
                        #expect(runs.count == 1 && runs[0].content.contains("on-modal"), "\(runs.map(\.json))")
                        let sandbox = try #require(try await bed.runtime.store.liveSandbox(conversation: id))
                        #expect(sandbox.backend == .modal)
                        #expect(sandbox.reference?.hasPrefix("sb-") == true)

                        _ = try await gateway.json(.post, "/api/conversations/\(id)/stop", body: [:])
                        try await eventually("the Modal sandbox is terminated", timeout: .seconds(30)) {
                            try fake.calls("SandboxTerminate").count == 1
                        }
                    }
                }
            }
        }
    }

    /// The warm pool, the idle rules and reconciliation work for `modal` as for the other backends: a warm
    /// sandbox is made ahead and handed out; idle, it is "paused" (it keeps running and answering) and then
    /// stopped (terminated); a sandbox of this deployment that the database does not know is terminated.
    @Test func theWarmPoolIdleRulesAndReconciliationWorkForModalSandboxes() async throws {
        try await FakeModal.with { fake in
            try await TestRuntime.with { runtime in
                let settings = TestRuntime.settings {
                    $0.warmPool = [.init(backend: .modal, image: $0.image, size: 1)]
                    $0.maintenanceInterval = .milliseconds(200)
                    $0.idlePauseAfter = .seconds(2)
                    $0.idleStopAfter = .seconds(5)
                }
                let modal = Self.backend(runtime, fake.settings)
                let stray = try await modal.create(
                    SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "k")
                )
                let worker = try runtime.makeWorker(settings: settings, backends: [.modal], modal: fake.settings)
                try await running(worker) {
                    let warm = try await eventuallyValue("a warm Modal sandbox", timeout: .seconds(60)) {
                        () async throws -> SandboxRecord? in
                        try await runtime.store.all().first { $0.status == .warm && $0.backend == .modal }
                    }
                    let ready = try await runtime.provisioned(UUID())
                    #expect(ready.sandboxID == warm.id, "the warm sandbox was handed out")
                    #expect(try await runtime.run("echo warm", in: ready) == "warm")

                    try await worker.reconcile()
                    try await eventually("the stray sandbox is terminated", timeout: .seconds(30)) {
                        try await modal.inspect(stray) == .missing
                    }
                    let reference = try #require(warm.reference)
                    #expect(try await modal.inspect(reference) == .running, "a known one is kept")

                    try await eventually("the idle sandbox is paused", timeout: .seconds(30)) {
                        try await runtime.store.sandbox(id: ready.sandboxID)?.status == .paused
                    }
                    #expect(try await runtime.run("echo still", in: ready) == "still", "paused on Modal: running")
                    try await eventually("the idle sandbox is stopped", timeout: .seconds(30)) {
                        let status = try await runtime.store.sandbox(id: ready.sandboxID)?.status
                        return status == .stopped || status == .lost
                    }
                    #expect(try await modal.inspect(reference) == .missing, "stopping ended it on Modal")
                }
            }
        }
    }

    /// Modal's `x-modal-warning` trailers reach the log.
    @Test func modalsWarningsAreLogged() async throws {
        try await FakeModal.with(faults: ["warning": "this client version is old"]) { fake in
            try await TestRuntime.with { runtime in
                let logs = CapturedLogs()
                let backend = ModalBackend(
                    settings: fake.settings,
                    deployment: runtime.namespace,
                    http: runtime.http,
                    logger: Logger(label: "test.modal") { _ in logs }
                )
                let reference = try await backend.create(
                    SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "k")
                )
                try await backend.destroy(reference)
                let lines = logs.store.lines.withLock { $0 }
                #expect(lines.contains { $0.contains("Modal warns: this client version is old") }, "\(lines)")
            }
        }
    }
}

/// A log handler that keeps every line, for tests of what is logged.
struct CapturedLogs: LogHandler {
    final class Lines: Sendable {
        let lines = Mutex<[String]>([])
    }

    let store = Lines()
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = metadata.merging(event.metadata ?? [:]) { $1 }.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        store.lines.withLock { $0.append("\(event.level) \(event.message) \(fields)") }
    }
}
