import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import HTTPClient
import Logging
import RuntimeManager
import Testing

@testable import RuntimeBackends

#if canImport(Glibc)
import Glibc
#endif

/// Runtime-manager workers on the Docker backend, against the dockerd the test command starts (Deckhand's own
/// bridge network, the sandbox image that scripts/test.sh builds).
@Suite struct RuntimeDockerTests {
    /// Fails (never skips) when the image is missing, saying how to build it.
    func requireImage(_ runtime: TestRuntime) async throws {
        let docker = TestDocker(client: runtime.http)
        guard try await docker.imageExists(TestRuntime.sandboxImage) else {
            throw DeckhandError(
                .unavailable,
                "the sandbox image \(TestRuntime.sandboxImage) does not exist: run deploy/sandbox/build-offline.sh (scripts/test.sh does)"
            )
        }
    }

    /// On a node advertised at 127.0.0.2: the container's port is published there, and its URL says so.
    @Test func provisionRunDestroyAContainer() async throws {
        try await TestRuntime.with { runtime in
            try await requireImage(runtime)
            let node = NodeSettings(id: "node-a", advertiseHost: "127.0.0.2")
            let worker = try runtime.makeWorker(backends: [.docker], node: node)
            let backend = try runtime.makeBackends([.docker])[0]
            try await running(worker) {
                let conversation = UUID()
                try await runtime.provision(conversation)
                let reply = try await runtime.reply(for: conversation)
                let ready = try #require(reply.ready, "expected sandbox_ready, got \(reply)")
                #expect(ready.backend == .docker)
                #expect(ready.url.hasPrefix("http://127.0.0.2:"), "\(ready.url)")
                #expect(try await runtime.run("echo from-$(hostname)-$((6*7))", in: ready).contains("42"))

                let listed = try await backend.list()
                #expect(listed.map(\.sandboxID) == [ready.sandboxID])
                let container = try #require(listed.first?.reference)
                #expect(try await backend.inspect(container) == .running)

                try await runtime.send(.destroy, sandbox: ready.sandboxID)
                try await eventually("the sandbox row is deleted") {
                    try await runtime.store.sandbox(id: ready.sandboxID) == nil
                }
                #expect(try await backend.inspect(container) == .missing, "the container is gone")
                #expect(try await backend.list().isEmpty)
            }
        }
    }

    /// Provisions that find no sandbox network race to make it: the losers are told the address pool overlaps,
    /// sometimes before the winner's network can be read; every one of them goes on (CI failed on a fresh
    /// engine when the loser looked only once).
    @Test func provisionsRacingToMakeTheNetworkAllGoOn() async throws {
        try await TestRuntime.with { runtime in
            let docker = TestDocker(client: runtime.http)
            let prefix = "deckhand-race-"
            for leftover in try await docker.networks(named: prefix) { try await docker.removeNetwork(leftover) }
            var settings = TestRuntime.dockerSettings
            settings.bridgeNetwork = prefix + runtime.namespace
            settings.bridgeSubnet = "198.18.2.0/24"
            let backend = DockerBackend(
                socket: TestEnvironment.dockerSocket,
                settings: settings,
                deployment: runtime.namespace,
                client: runtime.http,
                logger: Logger(label: "test.runtime")
            )
            let outcomes = await withTaskGroup(of: (any Error)?.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        do {
                            try await backend.ensureNetwork()
                            return nil
                        } catch {
                            return error
                        }
                    }
                }
                return await group.reduce(into: [(any Error)?]()) { $0.append($1) }
            }
            try await docker.removeNetwork(settings.bridgeNetwork)
            #expect(outcomes.compactMap { $0 }.isEmpty, "\(outcomes.compactMap { $0 })")
            #expect(outcomes.count == 8)
        }
    }

    @Test func containersAreConfinedAndLabelled() async throws {
        try await TestRuntime.with { runtime in
            try await requireImage(runtime)
            let worker = try runtime.makeWorker(backends: [.docker])
            try await running(worker) {
                let conversation = UUID()
                let ready = try await runtime.provisioned(conversation)
                let reference = try #require(try await runtime.store.sandbox(id: ready.sandboxID)?.reference)
                var request = HTTPRequest(
                    method: .get,
                    url: "http://localhost/v1.41/containers/\(reference)/json",
                    unixSocketPath: TestEnvironment.dockerSocket
                )
                request.timeout = .seconds(10)
                let inspected = try await runtime.http.execute(request).expectSuccess().decode(JSONValue.self)
                guard case .object(let object) = inspected, case .object(let host) = object["HostConfig"],
                    case .object(let config) = object["Config"], case .object(let labels) = config["Labels"]
                else {
                    Issue.record("unexpected inspect answer")
                    return
                }
                #expect(host["Privileged"] == .bool(false))
                #expect(host["Memory"] == .number(Double(512 << 20)))
                #expect(host["PidsLimit"] == .number(256))
                #expect(host["CapDrop"] == ["ALL"])
                #expect(host["SecurityOpt"] == ["no-new-privileges"])
                #expect(labels["deckhand.sandbox"]?.stringValue == ready.sandboxID.uuidString.lowercased())
                #expect(labels["deckhand.managed"]?.stringValue == "true")
                #expect(host["ReadonlyRootfs"] == .bool(true))
                #expect(host["CapAdd"] == ["KILL", "SETGID", "SETUID"], "only what the drop to the user needs")
                #expect(host["NetworkMode"] == .string(TestRuntime.dockerSettings.bridgeNetwork))
                // The workspace volume is the one mount: no Docker socket, nothing of the host.
                guard case .array(let mounts)? = object["Mounts"] else {
                    Issue.record("no Mounts in the inspect answer")
                    return
                }
                #expect(mounts.map { $0["Destination"] } == ["/workspace"])
                #expect(mounts.map { $0["Type"] } == ["volume"])
                // The session key reaches the sandbox but the sandbox refuses a request without it.
                var unauthenticated = HTTPRequest(method: .post, url: ready.url + "/execute_action")
                unauthenticated.body = Array(#"{"action":{"action":"run","args":{"command":"id"}}}"#.utf8)
                #expect(try await runtime.http.execute(unauthenticated).status == 403)
            }
        }
    }

    /// Runs `body` with a docker worker and a conversation's container whose workspace holds `notes.txt`
    /// (`kept`).
    func withNotedContainer(
        _ body: @Sendable (TestRuntime, _ conversation: UUID, SandboxReady) async throws -> Void
    ) async throws {
        try await TestRuntime.with { runtime in
            try await requireImage(runtime)
            let worker = try runtime.makeWorker(backends: [.docker])
            try await running(worker) {
                let conversation = UUID()
                let ready = try await runtime.provisioned(conversation)
                _ = try await runtime.run("echo kept > /workspace/notes.txt", in: ready)
                try await body(runtime, conversation, ready)
            }
        }
    }

    /// Whether `sandbox`'s workspace still holds the notes ``withNotedContainer(_:)`` wrote.
    func notesKept(_ runtime: TestRuntime, in sandbox: SandboxReady) async throws -> Bool {
        try await runtime.run("cat /workspace/notes.txt", in: sandbox).contains("kept")
    }

    @Test func pauseAndResumeAContainerKeepsItsFiles() async throws {
        try await withNotedContainer { runtime, conversation, ready in
            try await runtime.send(.pause, sandbox: ready.sandboxID)
            try await eventually("the container is paused") {
                try await runtime.store.sandbox(id: ready.sandboxID)?.status == .paused
            }
            try await runtime.send(.resume, sandbox: ready.sandboxID)
            let resumed = try #require(try await runtime.reply(for: conversation).ready)
            #expect(try await notesKept(runtime, in: resumed))
        }
    }

    /// A container killed under its conversation (`docker kill`, an OOM kill, a daemon restart) is not lost:
    /// the next provision starts the same container again, with its files; one paused behind Deckhand's back
    /// is resumed.
    @Test func aKilledOrPausedContainerComesBackWithItsFiles() async throws {
        try await withNotedContainer { runtime, conversation, ready in
            let container = try #require(try await runtime.store.sandbox(id: ready.sandboxID)?.reference)
            let backend = try runtime.makeBackends([.docker])[0]

            let docker = TestDocker(client: runtime.http)
            try await docker.kill(container)
            try await eventually("the container exited") { try await backend.inspect(container) == .stopped }
            let restarted = try await runtime.provisioned(conversation)
            #expect(restarted.sandboxID == ready.sandboxID, "the same sandbox, started again")
            #expect(try await notesKept(runtime, in: restarted))

            try await docker.pause(container)
            let resumed = try await runtime.provisioned(conversation)
            #expect(resumed.sandboxID == ready.sandboxID)
            #expect(try await notesKept(runtime, in: resumed))
            #expect(try await backend.inspect(container) == .running)
        }
    }

    @Test func aMissingImageFailsWithAReadableReason() async throws {
        try await TestRuntime.with { runtime in
            let worker = try runtime.makeWorker(backends: [.docker])
            try await running(worker) {
                let conversation = UUID()
                try await runtime.provision(conversation, image: "deckhand/no-such-image:0")
                let reply = try await runtime.reply(for: conversation)
                let failed = try #require(reply.failed, "expected sandbox_failed, got \(reply)")
                #expect(failed.code == "RUNTIME$IMAGE_MISSING")
                #expect(failed.reason.contains("deckhand/no-such-image:0"))
                #expect(failed.reason.contains("does not exist"))
                #expect(try await runtime.store.liveSandbox(conversation: conversation) == nil)
            }
        }
    }

    /// An engine that does not answer is an outage: the provision is retried (here for 1 s: two attempts),
    /// and only when every attempt failed does the conversation get `sandbox_failed`, with a readable reason.
    @Test func anUnreachableDockerSocketIsRetriedThenFailsWithAReadableReason() async throws {
        try await TestRuntime.with { runtime in
            let socket = "/tmp/\(runtime.namespace)-no-docker.sock"
            let settings = TestRuntime.settings { $0.commandRetryFor = .seconds(1) }
            let worker = try runtime.makeWorker(settings: settings, backends: [.docker], dockerSocket: socket)
            try await running(worker) {
                let conversation = UUID()
                try await runtime.provision(conversation)
                let reply = try await runtime.reply(for: conversation)
                let failed = try #require(reply.failed, "expected sandbox_failed, got \(reply)")
                #expect(failed.code == DeckhandError.Code.unavailable.rawValue)
                #expect(failed.reason.contains("Docker engine at \(socket) does not answer"))
            }
        }
    }

    /// A worker SIGKILLed in the middle of a provision: the command comes back to another worker, which takes
    /// the provision over once the dead worker's lease ran out; the conversation gets exactly one sandbox and
    /// no container is left behind.
    @Test func aWorkerKilledMidProvision() async throws {
        try await TestRuntime.with { runtime in
            try await requireImage(runtime)
            let environment = [
                "DECKHAND_DOCKER_SOCKET": TestEnvironment.dockerSocket,
                "DECKHAND_DOCKER_NETWORK": "host",
                "DECKHAND_DOCKER_MEMORY": "512m",
                "DECKHAND_RUNTIME_BACKEND": "docker",
                "DECKHAND_RUNTIME_IMAGE": TestRuntime.sandboxImage,
            ]
            // Kill the worker once a container exists but before its sandbox is recorded running: a window of a
            // few hundred milliseconds, which a loaded machine can let pass unseen (or close between the look
            // and the kill); then a new worker and another conversation try again.
            var caught: (conversation: UUID, interrupted: SandboxRecord)?
            for _ in 0..<8 where caught == nil {
                let process = try runtime.launchWorkerProcess(environment: environment)
                let attempt = UUID()
                try await runtime.provision(attempt)
                let window = try await eventuallyValue(
                    "the worker's container for \(attempt)",
                    timeout: .seconds(60),
                    interval: .milliseconds(5)
                ) { () -> Bool? in
                    guard let row = try await runtime.store.liveSandbox(conversation: attempt) else { return nil }
                    if row.status == .running { return false }
                    return row.reference != nil && row.status == .starting ? true : nil
                }
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                if window, let row = try await runtime.store.liveSandbox(conversation: attempt), row.status == .starting
                {
                    caught = (attempt, row)
                }
            }
            let (conversation, interrupted) = try #require(caught, "no kill landed between a container and its row")

            let survivor = try runtime.makeWorker(backends: [.docker])
            try await running(survivor) {
                let ready = try #require(try await runtime.reply(for: conversation).ready)
                let rows = try await runtime.store.all().filter { $0.status != .lost && $0.status != .error }
                let live = rows.filter { $0.conversationID == conversation }
                #expect(live.map(\.id) == [ready.sandboxID], "exactly one sandbox for the conversation")
                #expect(try await runtime.run("echo survived", in: ready).contains("survived"))
                // Earlier attempts that ran through have live sandboxes of their own; none is an orphan.
                let containers = try await runtime.makeBackends([.docker])[0].list()
                #expect(Set(containers.map(\.sandboxID)) == Set(rows.map(\.id)), "no orphan container")
                let replies = try runtime.allReplies()[conversation] ?? []
                #expect(Set(replies.compactMap { $0.ready?.sandboxID }) == [ready.sandboxID])
                #expect(ready.sandboxID == interrupted.id, "the interrupted provision was taken over")
            }
        }
    }
}
