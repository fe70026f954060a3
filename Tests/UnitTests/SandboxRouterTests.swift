import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import SandboxServer

/// The routes before the workspace is ready, without a socket (Hummingbird's in-memory router test).
@Suite struct SandboxRouterTests {
    @Test func aliveSaysNotInitializedUntilTheShellRuns() async throws {
        var configuration = SandboxConfiguration()
        configuration.sessionAPIKey = "key"
        let server = SandboxServer(configuration: configuration)
        let state = SandboxState(configuration: configuration, logger: Logger(label: "test"))
        let app = Application(router: server.makeRouter(state: state))
        try await app.test(.router) { client in
            try await client.execute(uri: "/alive", method: .get) { response in
                #expect(String(buffer: response.body) == #"{"status":"not initialized"}"#)
            }
            let action = ByteBuffer(string: #"{"action":{"action":"run","args":{"command":"echo hi"}}}"#)
            try await client.execute(
                uri: "/execute_action",
                method: .post,
                headers: [HTTPField.Name("X-Session-API-Key")!: "key"],
                body: action
            ) { response in
                #expect(response.status == .serviceUnavailable)
            }
        }
    }
}
