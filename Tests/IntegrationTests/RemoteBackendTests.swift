import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import HTTPClient
import Logging
import Postgres
import RuntimeBackends
import RuntimeManager
import Testing

/// The `remote` backend against a real Runtime API: a second Deckhand's `deckhand runtime-api` with its own
/// runtime worker and process sandboxes (its own schema and queues).
@Suite struct RemoteBackendTests {
    /// A Runtime API to provision from, and the settings of a `remote` backend that uses it.
    static func withProvider(_ body: (TestRuntime, RemoteSettings) async throws -> Void) async throws {
        try await RuntimeAPITests.withRuntimeAPI { provider, port in
            var remote = RemoteSettings()
            remote.url = "http://127.0.0.1:\(port)"
            remote.apiKey = try await APIKeyStore(postgres: provider.postgres)
                .create(user: "another-deckhand", scope: .runtimeAPI).key
            remote.retryFor = .seconds(2)
            try await body(provider, remote)
        }
    }

    /// Create → start (the API's URL and key) → pause → start again resumes it → stop → start again with its
    /// files → destroy; listed by its session while it lives; an unknown session is missing.
    @Test func theBackendDrivesARuntimeThroughItsLife() async throws {
        try await Self.withProvider { _, remote in
            try await TestRuntime.with { runtime in
                let backend = try runtime.makeBackends([.remote], remote: remote)[0]
                let spec = SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "deckhand-chose-this")
                let reference = try await backend.create(spec)
                #expect(reference.hasPrefix("dh-\(runtime.namespace)-\(spec.id.uuidString.lowercased())#"))
                let started = try await backend.start(reference, spec: spec)
                let (url, key) = (started.url, try #require(started.sessionAPIKey))
                #expect(key != spec.sessionAPIKey, "the API chose the key")
                #expect(try await backend.inspect(reference) == .running)
                let listed = try await backend.list()
                #expect(listed == [ListedSandbox(sandboxID: spec.id, reference: reference, state: .running)])
                _ = try await runtime.run("echo kept > /workspace/note", url: url, key: key)
                #expect(try await runtime.run("cat /workspace/note", url: url, key: key).contains("kept"))

                try await backend.pause(reference)
                try await eventually("the runtime is paused", timeout: .seconds(30)) {
                    try await backend.inspect(reference) == .paused
                }
                let resumed = try await backend.start(reference, spec: spec).url
                #expect(
                    try await runtime.run("cat /workspace/note", url: resumed, key: key).contains("kept")
                )

                try await backend.stop(reference)
                try await eventually("the runtime is stopped", timeout: .seconds(30)) {
                    try await backend.inspect(reference) == .stopped
                }
                let restarted = try await backend.start(reference, spec: spec)
                let (restartedURL, restartedKey) = (restarted.url, try #require(restarted.sessionAPIKey))
                #expect(
                    try await runtime.run("cat /workspace/note", url: restartedURL, key: restartedKey)
                        .contains("kept")
                )

                try await backend.destroy(reference)
                try await eventually("the runtime is ended", timeout: .seconds(30)) {
                    let state = try await backend.inspect(reference)
                    return state == .stopped || state == .missing
                }
                #expect(try await backend.inspect("dh-\(runtime.namespace)-\(UUID())") == .missing)
            }
        }
    }

    /// A runtime worker whose backend is `remote`: the conversation's sandbox is the API's runtime, answered
    /// with its URL and key; a pause reaches the API, and asking for the sandbox again wakes it with its files.
    @Test func aRuntimeWorkerProvisionsFromTheRuntimeAPI() async throws {
        try await Self.withProvider { _, remote in
            try await TestRuntime.with { runtime in
                let worker = try runtime.makeWorker(backends: [.remote], remote: remote)
                try await running(worker) {
                    let conversation = UUID()
                    let ready = try await runtime.provisioned(conversation)
                    #expect(ready.backend == .remote)
                    #expect(
                        try await runtime.run("echo remote > /workspace/f && cat /workspace/f", in: ready).contains(
                            "remote"
                        )
                    )
                    let record = try #require(try await runtime.store.sandbox(id: ready.sandboxID))
                    #expect(record.sessionAPIKey == ready.sessionAPIKey)
                    let reference = try #require(record.reference)

                    try await runtime.send(.pause, sandbox: ready.sandboxID)
                    let backend = try runtime.makeBackends([.remote], remote: remote)[0]
                    try await eventually("the API's runtime is paused", timeout: .seconds(30)) {
                        try await backend.inspect(reference) == .paused
                    }
                    #expect(try await runtime.store.sandbox(id: ready.sandboxID)?.status == .paused)
                    let again = try await runtime.provisioned(conversation)
                    #expect(again.sandboxID == ready.sandboxID)
                    #expect(try await runtime.run("cat /workspace/f", in: again).contains("remote"))
                }
            }
        }
    }

    /// A conversation test bed whose runtime worker takes its sandboxes from the Runtime API, with a conversation
    /// worker, both running for the length of `body`.
    static func withRemoteConversations(
        _ remote: RemoteSettings,
        _ body: @Sendable (TestConversations) async throws -> Void
    ) async throws {
        try await TestConversations.with { bed in
            let runtimeWorker = try bed.runtime.makeWorker(backends: [.remote], remote: remote)
            try await running(runtimeWorker, bed.makeWorker(sandboxBackend: .remote)) { try await body(bed) }
        }
    }

    /// A conversation of the scripted model end to end on a sandbox of the Runtime API: its command runs there;
    /// stopping the conversation stops the API's runtime; a message wakes it, with its files.
    @Test func aConversationRunsOnARemoteSandboxAndStoppingItStopsTheRuntime() async throws {
        try await Self.withProvider { _, remote in
            try await Self.withRemoteConversations(remote) { bed in
                let id = try await bed.start(
                    script: FakeLLM.Script(steps: [
                        .bash("echo remote-e2e > /workspace/r && cat /workspace/r"), .finish("Written."),
                        .bash("cat /workspace/r"), .finish("Read."),
                    ])
                )
                try await bed.waitFor(id, [.finished])
                let written = try await bed.events(id).filter { $0.observation == "run" }
                #expect(written.count == 1 && written.first?.content.contains("remote-e2e") == true)
                let sandbox = try #require(try await bed.runtime.store.liveSandbox(conversation: id))
                #expect(sandbox.backend == .remote)
                let reference = try #require(sandbox.reference)

                try await bed.send(.stop, ConversationTarget(conversationID: id))
                try await bed.waitFor(id, [.stopped])
                let api = try bed.runtime.makeBackends([.remote], remote: remote)[0]
                try await eventually("the API's runtime is stopped", timeout: .seconds(30)) {
                    try await api.inspect(reference) == .stopped
                }

                try await bed.say("Read it back.", to: id)
                try await bed.waitFor(id, [.finished])
                let read = try await bed.events(id).filter { $0.observation == "run" }
                #expect(
                    read.count == 2 && read.last?.content.contains("remote-e2e") == true,
                    "\(read.map(\.content))"
                )
                #expect(
                    try await bed.runtime.store.liveSandbox(conversation: id)?.id == sandbox.id,
                    "the same runtime"
                )
            }
        }
    }

    /// Provisioning while the Runtime API does not answer: the command is retried, and on its last attempt the
    /// conversation is told why (`sandbox_failed`, naming the API).
    @Test func aProvisionWhileTheAPIIsUnreachableIsRetriedThenFailsWithAReason() async throws {
        try await TestRuntime.with { runtime in
            var remote = RemoteSettings()
            remote.url = "http://127.0.0.1:1"
            remote.apiKey = "dh_" + String(repeating: "1", count: 64)
            remote.retryFor = .milliseconds(200)
            let settings = TestRuntime.settings { $0.commandRetryFor = .seconds(1) }
            let worker = try runtime.makeWorker(settings: settings, backends: [.remote], remote: remote)
            try await running(worker) {
                let conversation = UUID()
                try await runtime.provision(conversation)
                let reply = try await runtime.reply(for: conversation)
                let failed = try #require(reply.failed, "expected sandbox_failed, got \(reply)")
                #expect(failed.code == DeckhandError.Code.unavailable.rawValue)
                #expect(failed.reason.contains("Runtime API at http://127.0.0.1:1 does not answer"), "\(failed.reason)")
                #expect(!failed.reason.contains(remote.apiKey))
            }
        }
    }

    /// The warm pool and reconciliation work for `remote` as for the other backends: a warm runtime is started
    /// ahead and handed out; a runtime of this deployment that the database does not know is ended.
    @Test func theWarmPoolAndReconciliationWorkForRemoteRuntimes() async throws {
        try await Self.withProvider { _, remote in
            try await TestRuntime.with { runtime in
                let settings = TestRuntime.settings {
                    $0.warmPool = [.init(backend: .remote, image: $0.image, size: 1)]
                }
                let worker = try runtime.makeWorker(settings: settings, backends: [.remote], remote: remote)
                let api = try runtime.makeBackends([.remote], remote: remote)[0]
                let stray = SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "k")
                let strayReference = try await api.create(stray)
                try await running(worker) {
                    let warm = try await eventuallyValue("a warm remote runtime", timeout: .seconds(60)) {
                        () async throws -> SandboxRecord? in
                        try await runtime.store.all().first { $0.status == .warm && $0.backend == .remote }
                    }
                    let ready = try await runtime.provisioned(UUID())
                    #expect(ready.sandboxID == warm.id, "the warm runtime was handed out")
                    #expect(try await runtime.run("echo warm", in: ready).contains("warm"))
                    try await worker.reconcile()
                    try await eventually("the stray runtime is ended", timeout: .seconds(30)) {
                        try await api.inspect(strayReference) == .stopped
                    }
                    #expect(try await api.inspect(try #require(warm.reference)) == .running, "a known one is kept")
                }
            }
        }
    }

    /// The API replaced the session's runtime (its sandbox was lost, and a `/start` made a new one): the new
    /// runtime has an empty workspace, so the sandbox Deckhand knew is missing, and starting it fails.
    @Test func aRuntimeTheAPIReplacedCountsAsMissing() async throws {
        try await Self.withProvider { provider, remote in
            try await TestRuntime.with { runtime in
                let backend = try runtime.makeBackends([.remote], remote: remote)[0]
                let spec = SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "k")
                let reference = try await backend.create(spec)
                _ = try await backend.start(reference, spec: spec)
                let session = String(reference.prefix { $0 != "#" })
                let lostID = try #require(UUID(uuidString: String(reference.drop { $0 != "#" }.dropFirst())))
                try await Self.loseProviderSandbox(provider, lostID)
                #expect(try await backend.inspect(reference) == .missing, "a lost runtime is missing")
                // A client of the API starts the session again: a new runtime, which is not the sandbox Deckhand had.
                let client = RuntimeAPITests.Client(base: remote.url ?? "", key: remote.apiKey, http: runtime.http)
                let restarted = try await client.json(
                    .post,
                    "/start",
                    body: RuntimeAPITests.startBody(session: session)
                )
                #expect(restarted["runtime_id"]?.stringValue != lostID.uuidString.lowercased())
                #expect(try await backend.inspect(reference) == .missing, "a replaced runtime is missing")
                let failure = await #expect(throws: DeckhandError.self) {
                    try await backend.start(reference, spec: spec)
                }
                #expect(failure?.code == .runtimeLost)
            }
        }
    }

    /// A remote sandbox lost in the middle of a conversation: the next command finds it gone, the conversation
    /// gets a new one, says its workspace was lost, and goes on.
    @Test func aRemoteSandboxLostMidConversationIsReplacedAndTheConversationSaysSo() async throws {
        try await Self.withProvider { provider, remote in
            try await Self.withRemoteConversations(remote) { bed in
                let id = try await bed.start(
                    script: FakeLLM.Script(steps: [
                        .bash("echo before > /workspace/f"), .finish("Written."),
                        .bash("cat /workspace/f || echo no-file"), .finish("Read."),
                    ])
                )
                try await bed.waitFor(id, [.finished])
                let first = try #require(try await bed.runtime.store.liveSandbox(conversation: id))
                let reference = try #require(first.reference)
                let providerID = try #require(UUID(uuidString: String(reference.drop { $0 != "#" }.dropFirst())))
                try await Self.loseProviderSandbox(provider, providerID)

                try await bed.say("Read it back.", to: id)
                // (The agent is `finished` already: wait for an end after the message.)
                let events = try await eventuallyValue(
                    "the agent finished after the message",
                    timeout: .seconds(90)
                ) {
                    () async throws -> [Event]? in
                    let events = try await bed.events(id)
                    guard
                        let said = events.lastIndex(where: {
                            $0.action == "message" && $0.args["content"]?.stringValue == "Read it back."
                        })
                    else { return nil }
                    let ended = events[said...].contains {
                        $0.observation == "agent_state_changed"
                            && $0.extras["agent_state"]?.stringValue == "finished"
                    }
                    return ended ? events : nil
                }
                // The command in flight is answered with what happened to it, then the loss is told, once.
                let read = try #require(events.last { $0.action == "run" })
                let answer = try #require(events.first { $0.cause == read.id && $0.cause != nil })
                #expect(answer.content.contains("could not be reached"), "\(answer.content)")
                #expect(events.filter { $0.json.serialized.contains("WORKSPACE_LOST") }.count == 1)
                let second = try #require(try await bed.runtime.store.liveSandbox(conversation: id))
                #expect(second.id != first.id)
                #expect(try await bed.runtime.store.sandbox(id: first.id)?.status == .lost)
            }
        }
    }

    /// What a provider's lost sandbox looks like: its row given up on (as when its node is taken for dead) and its
    /// server gone.
    static func loseProviderSandbox(_ provider: TestRuntime, _ id: UUID) async throws {
        let record = try #require(try await provider.store.sandbox(id: id))
        try await provider.postgres.execute("UPDATE sandboxes SET status = 'lost' WHERE id = $1", [.uuid(id)])
        try await TestRuntime.killSandboxServer(folder: try #require(record.reference))
    }

    /// A Runtime API that does not answer is an outage (retried later, naming the API); one that refuses the key,
    /// or says a start failed for good, is a failure that says what it answered.
    @Test func anUnreachableAPIIsAnOutageAndARefusalSaysWhy() async throws {
        try await Self.withProvider { _, remote in
            try await TestRuntime.with { runtime in
                let spec = SandboxSpec(id: UUID(), image: "deckhand/sandbox", sessionAPIKey: "k")
                /// What creating the sandbox with `remote` changed by `change` fails with.
                func failure(_ change: (inout RemoteSettings) -> Void) async -> DeckhandError? {
                    var settings = remote
                    change(&settings)
                    let backend = RemoteBackend(
                        settings: settings,
                        deployment: runtime.namespace,
                        client: runtime.http,
                        logger: Logger(label: "test.remote")
                    )
                    return await #expect(throws: DeckhandError.self) { try await backend.create(spec) }
                }
                let outage = await failure {
                    $0.url = "http://127.0.0.1:1"
                    $0.retryFor = .milliseconds(300)
                }
                #expect(outage?.code == .unavailable)
                #expect(outage?.message.contains("127.0.0.1:1") == true)

                let wrongKey = "dh_" + String(repeating: "0", count: 64)
                let refusal = await failure { $0.apiKey = wrongKey }
                #expect(refusal?.code == .runtimeRemote)
                #expect(refusal?.message.contains("401") == true)
                #expect(refusal?.message.contains(wrongKey) == false, "the key is never in a message")

                // A start that failed for good (an image the API runs as given, on process sandboxes) is a 502
                // the backend does not retry: with a minute to retry in, a retried one would end as an outage.
                let failed = await failure {
                    $0.image = "example.org/not-a-sandbox:1"
                    $0.retryFor = .seconds(60)
                }
                #expect(failed?.code == .runtimeRemote, "\(String(describing: failed))")
                #expect(failed?.message.contains("502") == true)
                #expect(failed?.message.contains("run only Deckhand's sandbox server") == true)
            }
        }
    }
}
