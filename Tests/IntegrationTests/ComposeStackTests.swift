import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Testing

/// The compose stack of `deploy/compose` (issue 18) on the local Docker engine, with the images
/// `scripts/test.sh` builds offline: brought up with `deploy/compose/stack.sh up`, a conversation through the
/// load balancer while the worker services are scaled up and down, then torn down to nothing.
@Suite(.serialized)
struct ComposeStackTests {
    /// The images the stack runs, from the variables `scripts/test.sh` exports.
    static func images() throws -> [String: String] {
        var images: [String: String] = [:]
        let made = [
            "DECKHAND_IMAGE": "deploy/deckhand/build-offline.sh",
            "DECKHAND_SANDBOX_IMAGE": "deploy/sandbox/build-offline.sh",
            "DECKHAND_RABBITMQ_IMAGE": "deploy/compose/images/build-offline.sh",
            "DECKHAND_POSTGRES_IMAGE": "deploy/compose/images/build-offline.sh",
            "DECKHAND_HAPROXY_IMAGE": "deploy/compose/images/build-offline.sh",
        ]
        for (variable, script) in made.sorted(by: { $0.key < $1.key }) {
            guard let image = ProcessInfo.processInfo.environment[variable], !image.isEmpty else {
                throw DeckhandError(
                    .unavailable,
                    "\(variable) names no image: build it with \(script) and export it (scripts/test.sh does)"
                )
            }
            images[variable] = image
        }
        return images
    }

    /// One stack of its own: a compose project, a namespace for its queues and sandboxes, networks of their own.
    struct Stack {
        let project = TestEnvironment.uniqueName("dhcompose")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString).path
        let port: Int
        var environment: [String: String]

        init(images: [String: String]) throws {
            port = try TestEnvironment.freePort()
            environment = images.merging([
                "COMPOSE_PROJECT_NAME": project,
                "DECKHAND_NAMESPACE": project,
                "DECKHAND_ENV_FILE": directory + "/deckhand.env",
                "DECKHAND_SKIP_BUILD": "1",
                "DECKHAND_COMPOSE_PORT": String(port),
                "DECKHAND_PLATFORM_SUBNET": "198.18.18.0/24",
                "DECKHAND_PLATFORM_GATEWAY": Self.platformGateway,
                "DECKHAND_SANDBOX_NETWORK": project + "-sandboxes",
                "DECKHAND_SANDBOX_SUBNET": "198.18.19.0/24",
                "DECKHAND_LLM_USER_MODELS": "*",
            ]) { $1 }
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }

        /// The host's address on the stack's network: where its containers reach the scripted model.
        static let platformGateway = "198.18.18.1"

        /// `deploy/compose/stack.sh <arguments>`; its output, or an error with it.
        @discardableResult
        func run(_ arguments: [String], _ extra: [String: String] = [:]) async throws -> String {
            let (status, output) = try await TestEnvironment.launchDetached(
                "deploy/compose/stack.sh",
                arguments,
                environment: environment.merging(extra) { $1 }
            )
            guard status == 0 else {
                throw DeckhandError(
                    .internalError,
                    "stack.sh \(arguments.joined(separator: " ")) exited \(status): \(output.suffix(6000))"
                )
            }
            return output
        }

        /// `docker-compose up --scale` of both worker services (the gateways stay two), the rest as it is.
        func scale(conversationWorkers: Int, runtimeWorkers: Int) async throws {
            try await run([
                "compose", "up", "-d", "--no-recreate", "--scale", "gateway=2",
                "--scale", "conversation-worker=\(conversationWorkers)", "--scale", "runtime-worker=\(runtimeWorkers)",
            ])
        }

        /// The running containers of one of the stack's services.
        func containers(_ service: String) async throws -> [String] {
            try await TestEnvironment.runDetached(
                "/usr/bin/docker",
                [
                    "ps", "-q", "--filter", "label=com.docker.compose.project=\(project)",
                    "--filter", "label=com.docker.compose.service=\(service)",
                ]
            ).split(separator: "\n").map(String.init)
        }

        /// The API requests a gateway container answered (its `/metrics`, read inside the container).
        func apiRequests(_ container: String) async throws -> Double {
            let text = try await TestEnvironment.runDetached(
                "/usr/bin/docker",
                ["exec", container, "curl", "-fsS", "http://127.0.0.1:3000/metrics"]
            )
            return text.split(separator: "\n").filter { $0.hasPrefix("deckhand_http_requests_total{route=\"/api/") }
                .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
        }

        /// Whatever of the stack is left on the engine: containers (the stack's and its sandboxes), volumes and
        /// networks.
        func leftovers() async throws -> [String] {
            let listings = [
                ["ps", "-aq", "--filter", "label=com.docker.compose.project=\(project)"],
                ["ps", "-aq", "--filter", "label=deckhand.deployment=\(project)"],
                ["volume", "ls", "-q", "--filter", "label=com.docker.compose.project=\(project)"],
                ["network", "ls", "-q", "--filter", "name=\(project)"],
            ]
            var found: [String] = []
            for listing in listings {
                let output = try await TestEnvironment.runDetached("/usr/bin/docker", listing)
                found += output.split(separator: "\n").map { "\(listing[0]) \($0)" }
            }
            return found
        }
    }

    /// Up through `stack.sh up`; a conversation of 24 commands through the load balancer while the
    /// conversation and runtime workers go from 1 to 3 and 2, then back to 1 (SIGTERM: each drains), and one of
    /// the two gateways stops while a client keeps asking (none of its requests fails); every
    /// command ran once and every event is stored once, in order; `stack.sh down --volumes` leaves nothing.
    @Test(.timeLimit(.minutes(10)))
    func aConversationThroughTheLoadBalancerSurvivesScalingTheWorkers() async throws {
        let stack = try Stack(images: try Self.images())
        let llm = FakeLLM()
        var failure: (any Error)?
        let started = ContinuousClock.now
        do {
            // The stack's network first: the scripted model listens on the host's address on it.
            try await stack.run(["compose", "up", "-d", "postgres", "rabbitmq"])
            try await llm.serve(host: Stack.platformGateway) { baseURL in
                try await Self.exercise(stack, llm: llm, baseURL: baseURL, started: started)
            }
        } catch {
            failure = error
        }
        // Torn down whatever happened above; a failure of its own is reported after the test's.
        var downFailure: (any Error)?
        do { try await stack.run(["down", "--volumes"]) } catch { downFailure = error }
        let left = try await stack.leftovers()
        try? FileManager.default.removeItem(atPath: stack.directory)
        if let failure { throw failure }
        if let downFailure { throw downFailure }
        #expect(left.isEmpty, "stack.sh down left \(left)")
    }

    static func exercise(_ stack: Stack, llm: FakeLLM, baseURL: String, started: ContinuousClock.Instant) async throws {
        // Every later `up` (the scaling ones too) gives new workers the same model.
        var stack = stack
        stack.environment["DECKHAND_LLM_BASE_URL"] = baseURL
        try await stack.run(["up"])
        let bringUp = ContinuousClock.now - started
        #expect(try await stack.containers("gateway").count == 2, "two gateways behind the load balancer")
        let key = try #require(
            try await stack.run(["key", "compose-tester"]).split(separator: "\n").last.map(String.init),
            "stack.sh key printed a key"
        )
        let api = TestGateway(baseURL: "http://127.0.0.1:\(stack.port)", key: key, http: try HTTPClient())

        let tag = "scaled"
        let steps = 24
        let model = "script-compose"
        // The cluster drill's script: each command appends a line to a file and counts them, the last prints it.
        llm.register(ClusterDrillTests.script(tag: tag, steps: steps, latency: 500), model: model)
        let conversation = try await api.createConversation("Count.", model: model)
        func ran() async throws -> Int {
            try await api.events(conversation).filter { $0.observation == "run" }.count
        }
        try await eventually("three commands ran", timeout: .seconds(120), interval: .milliseconds(200)) {
            try await ran() >= 3
        }
        try await stack.scale(conversationWorkers: 3, runtimeWorkers: 2)
        #expect(try await stack.containers("conversation-worker").count == 3)
        #expect(try await stack.containers("runtime-worker").count == 2)
        let atScaleUp = try await ran()
        try await eventually("two more commands ran", timeout: .seconds(60), interval: .milliseconds(200)) {
            try await ran() >= atScaleUp + 2
        }
        // Down again while the conversation runs: compose stops the newest containers (SIGTERM), which drain.
        try await stack.scale(conversationWorkers: 1, runtimeWorkers: 1)
        #expect(try await stack.containers("conversation-worker").count == 1)
        #expect(try await stack.containers("runtime-worker").count == 1)
        let atScaleDown = try await ran()
        #expect(atScaleDown <= steps, "the conversation still ran when the workers were scaled down")

        // One gateway stops (SIGTERM, as in a rolling restart) while a client keeps asking: the load balancer
        // sends every request to the other.
        let gateways = try await stack.containers("gateway")
        #expect(gateways.count == 2)
        for gateway in gateways {
            #expect(try await stack.apiRequests(gateway) > 0, "the load balancer sent API requests to \(gateway)")
        }
        async let stopped = TestEnvironment.runDetached("/usr/bin/docker", ["stop", "-t", "15", gateways[0]])
        var refused: [Int] = []
        for _ in 0..<40 {
            let status = try await api.request(.get, "/api/conversations/\(conversation)").status
            if status != 200 { refused.append(status) }
            try await Task.sleep(for: .milliseconds(100))
        }
        _ = try await stopped
        #expect(refused.isEmpty, "while a gateway stopped, the API answered \(refused)")

        let lastEvents: @Sendable () async -> String = {
            (try? await api.events(conversation).suffix(6).map(\.json.serialized).joined(separator: "\n")) ?? ""
        }
        let stored = try await eventuallyValue(
            "the conversation finished",
            timeout: .seconds(180),
            interval: .milliseconds(250),
            describe: lastEvents
        ) {
            let events = try await api.events(conversation)
            let finished = events.contains {
                $0.observation == "agent_state_changed" && $0.extras["agent_state"]?.stringValue == "finished"
            }
            return finished ? events : nil
        }
        #expect(stored.map { $0.id ?? -1 } == Array(0..<stored.count), "event ids contiguous")
        for action in stored where action.action == "run" {
            #expect(stored.filter { $0.cause == action.id }.count == 1, "one observation of action \(action.id ?? -1)")
        }
        let printed = try #require(
            stored.last { $0.observation == "run" && $0.extras["command"]?.stringValue?.hasPrefix("cat ") == true },
            "the file was printed"
        )
        let lines = printed.content.split(separator: "\n").map(String.init).filter { $0.hasPrefix(tag + "-") }
        #expect(lines == (0..<steps).map { "\(tag)-\($0)" }, "every command ran once, in order")
        print(
            "compose stack: up in \(bringUp) (from nothing, images built), \(stored.count) events; scaled up "
                + "after \(atScaleUp) of \(steps) commands, down after \(atScaleDown)"
        )
    }
}
