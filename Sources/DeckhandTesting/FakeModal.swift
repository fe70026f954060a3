import DeckhandCore
import Foundation
import RuntimeBackends

/// Modal's API faked on loopback for a test: scripts/modal/fake_modal.py (gRPC over h2c, requests decoded by
/// Modal's own classes), whose sandboxes are `deckhand-sandbox` processes. One per test, with its own token,
/// its own folder and the faults the test asks for; stopped (with its sandboxes) when the test ends.
public struct FakeModal: Sendable {
    /// Where it listens.
    public let port: Int
    /// `modal.*` settings that point a backend at it (plain-HTTP tunnels, short timeouts).
    public let settings: ModalSettings
    let folder: String

    /// Runs `body` with a fake whose misbehaviour `faults` describes (see fake_modal.py).
    public static func with(
        faults: JSONValue = [:],
        _ body: (FakeModal) async throws -> Void
    ) async throws {
        let python = try TestEnvironment.tool("DECKHAND_MODAL_PYTHON", madeBy: "scripts/modal/venv.sh")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fake-modal-\(UUID())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let output = folder + "/fake.log"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        var settings = ModalSettings()
        settings.tokenID = "ak-\(UUID().uuidString.prefix(8).lowercased())"
        settings.tokenSecret = "as-\(UUID().uuidString.lowercased())"
        settings.tunnelTLS = false
        settings.app = "deckhand-test"
        settings.image = "registry.example.com/deckhand/sandbox:test"
        settings.memoryMB = 512
        settings.retryFor = .seconds(5)
        settings.requestTimeout = .seconds(30)
        settings.startTimeout = .seconds(30)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [
            TestEnvironment.repositoryRoot + "/scripts/modal/fake_modal.py", "--sandbox-binary",
            ProcessBackend.defaultBinary, "--root", folder, "--token-id", settings.tokenID, "--token-secret",
            settings.tokenSecret, "--calls", folder + "/calls.jsonl", "--faults", faults.serialized,
        ]
        // Its stdin is a pipe this process holds: if the test dies, the fake ends with it.
        let lifeline = Pipe()
        process.standardInput = lifeline
        process.standardOutput = FileHandle(forWritingAtPath: output)
        process.standardError = FileHandle(forWritingAtPath: output)
        try process.run()
        let outcome: Result<Void, any Error>
        do {
            let port = try await eventuallyValue("the fake Modal server listens", timeout: .seconds(60)) { () -> Int? in
                guard process.isRunning else {
                    throw DeckhandError(
                        .unavailable,
                        "the fake Modal server exited: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")"
                    )
                }
                let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
                return text.split(separator: "\n").lazy.compactMap { line in
                    line.hasPrefix("fake-modal port ") ? Int(line.dropFirst("fake-modal port ".count)) : nil
                }.first
            }
            settings.serverURL = "http://127.0.0.1:\(port)"
            try await body(FakeModal(port: port, settings: settings, folder: folder))
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        process.terminate()
        try? lifeline.fileHandleForWriting.close()
        try? await eventually("the fake Modal server ends", timeout: .seconds(10)) { !process.isRunning }
        try? FileManager.default.removeItem(atPath: folder)
        try outcome.get()
    }

    /// Every call the fake was asked, oldest first: `rpc`, `idempotency_key`, `attempt`, `client_type`,
    /// `client_version`, `token_id_ok` and `request` (as Modal's classes read it, in JSON).
    public func calls() throws -> [JSONValue] {
        let text = (try? String(contentsOfFile: folder + "/calls.jsonl", encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").map { try JSONValue(parsing: Array($0.utf8)) }
    }

    /// The calls of one RPC.
    public func calls(_ rpc: String) throws -> [JSONValue] {
        try calls().filter { $0["rpc"]?.stringValue == rpc }
    }

    /// What the fake logged (for failure messages).
    public var log: String { (try? String(contentsOfFile: folder + "/fake.log", encoding: .utf8)) ?? "" }
}
