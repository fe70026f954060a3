import DeckhandCore
import Foundation
import GRPC
import Modal
import Testing

/// The Modal messages against golden bytes made with Modal's own classes (Fixtures/modal-golden.json, from
/// scripts/modal/golden.py): every request Deckhand sends is written byte for byte as `modal_proto` writes it,
/// and the answers it reads are read right with fields it does not know among them.
@Suite struct ModalMessageTests {
    struct Golden: Decodable {
        var requests: [String: String]
        var responses: [String: String]
    }

    static let golden: Golden = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/modal-golden.json")
        // A missing or broken fixture fails every test that reads it, naming the file.
        guard let data = try? Data(contentsOf: url), let golden = try? JSONDecoder().decode(Golden.self, from: data)
        else { return Golden(requests: [:], responses: [:]) }
        return golden
    }()

    static func bytes(_ hex: String?) throws -> [UInt8] {
        let hex = try #require(hex, "no such golden entry in Fixtures/modal-golden.json")
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(try #require(UInt8(hex[index..<next], radix: 16)))
            index = next
        }
        return bytes
    }

    static func request(_ name: String) throws -> [UInt8] { try bytes(golden.requests[name]) }
    static func response(_ name: String) throws -> [UInt8] { try bytes(golden.responses[name]) }

    static let tags = [
        SandboxTag("deckhand.deployment", "prod"),
        SandboxTag("deckhand.sandbox", "6f1c2a52-8f0e-4d8e-9c55-0a1b2c3d4e5f"),
    ]

    /// Each request as Deckhand builds it, named as in the fixture.
    static func requests() -> [(String, any ProtobufMessage)] {
        var app = AppGetOrCreateRequest()
        app.appName = "deckhand"
        app.environmentName = "main"
        app.objectCreationType = .createIfMissing
        var environment = EnvironmentGetOrCreateRequest()
        environment.deploymentName = "main"
        var image = ImageGetOrCreateRequest()
        image.dockerfileCommands = ["FROM registry.example.com/deckhand/sandbox:0.1.0"]
        image.appID = "ap-1"
        image.builderVersion = "2025.06"
        var join = ImageJoinStreamingRequest()
        join.imageID = "im-1"
        join.timeout = 55
        join.lastEntryID = "e-7"
        var secret = SecretGetOrCreateRequest()
        secret.environmentName = "main"
        secret.objectCreationType = .ephemeral
        secret.environment = ["SESSION_API_KEY": "k-1", "A": "1", "EMPTY": ""]
        var create = SandboxCreateRequest()
        create.appID = "ap-1"
        create.definition.entrypointArgs = ["/usr/local/bin/deckhand-sandbox", "--port", "8000"]
        create.definition.imageID = "im-1"
        create.definition.secretIDs = ["st-1"]
        create.definition.memoryMB = 2048
        create.definition.milliCPU = 1000
        create.definition.memoryMBMax = 2048
        create.definition.milliCPUMax = 2000
        create.definition.timeoutSeconds = 86400
        create.definition.workdir = "/workspace"
        create.definition.openPorts = [PortSpec(port: 8000)]
        create.definition.idleTimeoutSeconds = 0
        create.tags = tags
        var list = SandboxListRequest()
        list.appID = "ap-1"
        list.beforeTimestamp = 1.7e9
        list.environmentName = "main"
        list.tags = tags
        return [
            ("app_get_or_create", app),
            ("environment_get_or_create", environment),
            ("image_get_or_create", image),
            ("image_join_streaming", join),
            ("secret_get_or_create", secret),
            ("sandbox_create", create),
            ("sandbox_get_task_id", SandboxRequest("sb-1", timeout: 55)),
            ("sandbox_get_tunnels", SandboxRequest("sb-1", timeout: 50)),
            ("sandbox_wait_polling", SandboxRequest("sb-1", timeout: 0)),
            ("sandbox_wait", SandboxRequest("sb-1", timeout: 10)),
            ("sandbox_terminate", SandboxRequest("sb-1")),
            ("sandbox_list", list),
        ]
    }

    @Test func everyRequestIsWrittenAsModalsClassesWriteIt() throws {
        let built = Self.requests()
        #expect(
            Set(built.map(\.0)) == Set(Self.golden.requests.keys),
            "the fixture and the test name the same requests"
        )
        for (name, message) in built {
            #expect(message.serialized() == (try Self.request(name)), "\(name)")
        }
    }

    @Test func everyRequestReadsBackAsItWasBuilt() throws {
        var create = try SandboxCreateRequest(serialized: try Self.request("sandbox_create"))
        #expect(create.definition.openPorts == [PortSpec(port: 8000)])
        #expect(create.definition.idleTimeoutSeconds == 0, "an optional field at zero is present")
        #expect(create.definition.workdir == "/workspace")
        #expect(create.tags == Self.tags)
        create.definition.workdir = nil
        #expect(try SandboxCreateRequest(serialized: create.serialized()).definition.workdir == nil)
        let secret = try SecretGetOrCreateRequest(serialized: try Self.request("secret_get_or_create"))
        #expect(secret.environment == ["SESSION_API_KEY": "k-1", "A": "1", "EMPTY": ""])
        #expect(secret.objectCreationType == .ephemeral)
        let join = try ImageJoinStreamingRequest(serialized: try Self.request("image_join_streaming"))
        #expect(join.timeout == 55)
        let list = try SandboxListRequest(serialized: try Self.request("sandbox_list"))
        #expect(list.beforeTimestamp == 1.7e9)
    }

    @Test func answersAreReadWithTheFieldsDeckhandDoesNotKnowSkipped() throws {
        #expect(try AppGetOrCreateResponse(serialized: try Self.response("app_get_or_create")).appID == "ap-1")
        let environment = try EnvironmentGetOrCreateResponse(serialized: try Self.response("environment_get_or_create"))
        #expect(environment.environmentID == "en-1")
        #expect(environment.imageBuilderVersion == "2025.06")
        let building = try ImageGetOrCreateResponse(serialized: try Self.response("image_get_or_create_building"))
        #expect(building.imageID == "im-1")
        #expect(building.result == nil, "a build that has not ended has no result")
        let joined = try ImageJoinStreamingResponse(serialized: try Self.response("image_join_streaming"))
        #expect(joined.result?.status == .success)
        #expect(joined.entryID == "e-9")
        #expect(joined.eof)
        let terminated = try GenericResult(serialized: try Self.response("generic_result_terminated"))
        #expect(terminated == GenericResult(status: .terminated, exception: "terminated", exitCode: -1))
        #expect(terminated.serialized() == (try Self.response("generic_result_terminated")), "−1 is 10 bytes")
        let task = try SandboxGetTaskIDResponse(serialized: try Self.response("sandbox_get_task_id"))
        #expect(task.taskID == "ta-1")
        #expect(task.taskResult == nil)
        let tunnels = try SandboxGetTunnelsResponse(serialized: try Self.response("sandbox_get_tunnels"))
        #expect(tunnels.result?.status == .success)
        #expect(tunnels.tunnels == [TunnelData(host: "sb-1-8000.modal.host", port: 443, containerPort: 8000)])
        #expect(tunnels.tunnels.first?.url == "https://sb-1-8000.modal.host")
        let listed = try SandboxListResponse(serialized: try Self.response("sandbox_list"))
        #expect(listed.sandboxes.map(\.id) == ["sb-1", "sb-2"])
        #expect(listed.sandboxes[0].taskResult == GenericResult(status: .failure, exitCode: 3))
        #expect(listed.sandboxes[0].tags == Self.tags)
        #expect(listed.sandboxes[0].createdAt == 1.7e9)
        #expect(listed.sandboxes[1].taskResult == nil)
    }
}
