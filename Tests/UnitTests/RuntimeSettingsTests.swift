import DeckhandCore
import Foundation
import Messaging
import RuntimeBackends
import RuntimeManager
import Testing

@Suite struct RuntimeSettingsTests {
    private func configuration(_ environment: [String: String]) throws -> DeckhandConfiguration {
        try DeckhandConfiguration(reader: ConfigurationReader(environment: environment))
    }

    @Test func warmPoolTargetsParseWithDefaultImages() throws {
        let config = try configuration([
            "DECKHAND_RUNTIME_WARM_POOL": "process=2, docker=3 ,docker:my/image:1.0=1",
            "DECKHAND_RUNTIME_IMAGE": "deckhand/sandbox:9",
        ])
        #expect(
            config.runtime.warmPool == [
                .init(backend: .process, image: RuntimeSettings.processImage, size: 2),
                .init(backend: .docker, image: "deckhand/sandbox:9", size: 3),
                .init(backend: .docker, image: "my/image:1.0", size: 1),
            ]
        )
    }

    @Test func aBadWarmPoolNamesTheKey() throws {
        for text in ["docker", "kubernetes=2", "docker=-1", "process=two"] {
            let error = #expect(throws: DeckhandError.self) {
                try configuration(["DECKHAND_RUNTIME_WARM_POOL": text])
            }
            #expect(error?.message.contains("runtime.warm_pool") == true, "\(text)")
        }
    }

    @Test func sandboxEnvironmentParsesAndABadOneHidesItsValues() throws {
        let config = try configuration(["DECKHAND_RUNTIME_ENVIRONMENT": "A=1, B_2=x=y"])
        #expect(config.runtime.environment == ["A": "1", "B_2": "x=y"])
        let error = #expect(throws: DeckhandError.self) {
            try configuration(["DECKHAND_RUNTIME_ENVIRONMENT": "TOKEN=hunter2, 9BAD=1"])
        }
        #expect(error?.message.contains("runtime.environment") == true)
        #expect(error?.message.contains("hunter2") == false)
    }

    @Test func backendChoiceAndDockerLimits() throws {
        let config = try configuration([
            "DECKHAND_RUNTIME_BACKEND": "process", "DECKHAND_DOCKER_MEMORY": "512m", "DECKHAND_DOCKER_CPUS": "1.5",
            "DECKHAND_DOCKER_NETWORK": "host",
        ])
        #expect(config.runtime.backend == .process)
        #expect(config.docker.memoryBytes == 512 << 20)
        #expect(config.docker.cpus == 1.5)
        #expect(config.docker.network == .host)
        #expect(try configuration([:]).runtime.backend == nil)
        let error = #expect(throws: DeckhandError.self) {
            try configuration(["DECKHAND_DOCKER_NETWORK": "overlay"])
        }
        #expect(error?.message.contains("docker.network") == true)
    }

    @Test func retryDelaysGrowAndTheLastRepeats() {
        #expect(RetryDelay.forAttempt(1) == .oneSecond)
        #expect(RetryDelay.forAttempt(2) == .fiveSeconds)
        #expect(RetryDelay.forAttempt(3) == .thirtySeconds)
        #expect(RetryDelay.forAttempt(9) == .thirtySeconds)
        // Attempts whose retries span a duration: 1 s, then 5 s, then 30 s each.
        #expect(RetryDelay.attempts(spanning: .zero) == 1)
        #expect(RetryDelay.attempts(spanning: .seconds(1)) == 2)
        #expect(RetryDelay.attempts(spanning: .seconds(6)) == 3)
        #expect(RetryDelay.attempts(spanning: .seconds(7)) == 4)
        #expect(RetryDelay.attempts(spanning: .seconds(900)) == 33, "1 + 5 + 30 × 30 = 906 s")
        // A runtime worker's commands get as many as span runtime.command_retry_for, unless told otherwise.
        var settings = RuntimeSettings()
        settings.commandRetryFor = .seconds(6)
        #expect(RuntimeWorker.Configuration(settings: settings, defaultBackend: .process).maxAttempts == 3)
        let told = RuntimeWorker.Configuration(settings: settings, defaultBackend: .process, maxAttempts: 1)
        #expect(told.maxAttempts == 1)
        let topology = Topology(namespace: "t1")
        #expect(topology.runtimeQueue == "t1.runtime.commands")
        #expect(topology.retryQueue(for: topology.runtimeQueue, delay: .fiveSeconds) == "t1.runtime.commands.retry.5s")
        #expect(Topology().commandsExchange == "deckhand.commands")
    }

    @Test func runtimeMessagesUseSnakeCase() throws {
        let id = UUID()
        let json = String(decoding: try JSONEncoder().encode(ProvisionRequest(conversationID: id)), as: UTF8.self)
        #expect(json.contains("\"conversation_id\":\"\(id.uuidString)\""))
        let decoded = try JSONDecoder().decode(
            SandboxTarget.self,
            from: Data(#"{"sandbox_id":"\#(id.uuidString)"}"#.utf8)
        )
        #expect(decoded.sandboxID == id)
    }

    @Test func dockerStatesMapToBackendStates() {
        #expect(DockerBackend.state("running") == .running)
        #expect(DockerBackend.state("paused") == .paused)
        #expect(DockerBackend.state("exited") == .stopped)
        #expect(DockerBackend.state("created") == .created)
        #expect(DockerBackend.state("removing") == .missing)
    }
}
