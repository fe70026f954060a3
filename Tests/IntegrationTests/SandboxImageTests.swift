import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Testing

/// The sandbox image (deploy/sandbox/build-offline.sh, which scripts/test.sh runs first) under the real
/// Docker engine, with host networking.
@Suite struct SandboxImageTests {
    @Test func theImageServesAliveAndRunsACommand() async throws {
        let image = ProcessInfo.processInfo.environment["DECKHAND_SANDBOX_IMAGE"] ?? "deckhand/sandbox:0.1.0"
        let client = try HTTPClient()
        let docker = TestDocker(client: client)
        guard try await docker.imageExists(image) else {
            Issue.record("the image \(image) does not exist: build it with deploy/sandbox/build-offline.sh")
            await client.shutdown()
            return
        }
        let port = try TestEnvironment.freePort()
        let key = UUID().uuidString
        let id = try await docker.run(
            image: image,
            name: TestEnvironment.uniqueName("sandbox-image"),
            arguments: ["--host", "127.0.0.1", "--port", "\(port)", "--working-dir", "/workspace"],
            environment: ["SESSION_API_KEY": key]
        )
        do {
            let base = "http://127.0.0.1:\(port)"
            // A timeout is reported below with the container's output.
            let alive = try? await eventuallyValue("the container's /alive", timeout: .seconds(20)) { () -> String? in
                guard let response = try? await client.execute(HTTPRequest(url: base + "/alive")),
                    response.status == 200, response.text.contains("\"ok\"")
                else { return nil }
                return response.text
            }
            let logs = alive == #"{"status":"ok"}"# ? "" : try await docker.logs(id)
            #expect(alive == #"{"status":"ok"}"#, "container output: \(logs)")

            let action =
                #"{"action":{"action":"run","args":{"command":"echo hi from $(cat /etc/debian_version | cut -d. -f1)"}}}"#
            let response = try await client.execute(
                HTTPRequest(
                    method: .post,
                    url: base + "/execute_action",
                    headers: ["X-Session-API-Key": key, "Content-Type": "application/json"],
                    body: Array(action.utf8)
                )
            )
            #expect(response.status == 200)
            let observation = try response.decode(JSONValue.self)
            #expect(observation["observation"] == "run")
            #expect(
                observation["content"]?.stringValue?.trimmingCharacters(in: .whitespacesAndNewlines) == "hi from 12"
            )
            #expect(observation["extras"]?["metadata"]?["exit_code"] == 0)
            #expect(observation["extras"]?["metadata"]?["working_dir"] == "/workspace")

            let refused = try await client.execute(
                HTTPRequest(method: .post, url: base + "/execute_action", body: Array(action.utf8))
            )
            #expect(refused.status == 403)
        } catch {
            try? await docker.remove(id)
            await client.shutdown()
            throw error
        }
        try await docker.remove(id)
        await client.shutdown()
    }
}
