import DeckhandCore
import Foundation
import HTTPClient
import Logging
import SandboxServer

/// Runs a sandbox server in this process for the length of one test, in a workspace of its own.
public enum TestSandbox {
    /// A running sandbox server and a client for it.
    public struct Server: Sendable {
        /// `http://127.0.0.1:<port>`.
        public let base: String
        public let key: String
        public let workspace: String
        public let client: HTTPClient

        /// `POST /execute_action` with `action` (the inner action object); the status and the JSON answer.
        public func execute(_ action: JSONValue) async throws -> (status: Int, body: JSONValue) {
            let response = try await request(.post, "/execute_action", json: ["action": action])
            return (response.status, try response.decode(JSONValue.self))
        }

        /// Runs a shell command and returns the observation.
        public func run(_ command: String, timeout: Double? = nil) async throws -> JSONValue {
            var action: JSONValue = ["action": "run", "args": ["command": .string(command)]]
            if let timeout { action["timeout"] = .number(timeout) }
            return try await execute(action).body
        }

        /// A request with the session key (unless `key` says otherwise).
        public func request(
            _ method: HTTPRequest.Method,
            _ path: String,
            body: [UInt8]? = nil,
            json: JSONValue? = nil,
            headers: HTTPHeaders = [:],
            key: String?? = .none
        ) async throws -> HTTPResponse {
            var request = HTTPRequest(method: method, url: base + path, headers: headers, body: body)
            request.timeout = .seconds(60)
            if let json {
                request.body = Array(try JSONEncoder().encode(json))
                request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
            }
            switch key {
            case .none: request.headers.replaceOrAdd(name: "X-Session-API-Key", value: self.key)
            case .some(.some(let other)): request.headers.replaceOrAdd(name: "X-Session-API-Key", value: other)
            case .some(.none): break
            }
            return try await client.execute(request)
        }
    }

    /// Calls `body` with a server listening on an ephemeral port of 127.0.0.1.
    public static func with<T: Sendable>(
        configure: (inout SandboxConfiguration) -> Void = { _ in },
        logger: Logger = Logger(label: "deckhand.sandbox"),
        _ body: @Sendable (Server) async throws -> T
    ) async throws -> T {
        let workspace = FileManager.default.temporaryDirectory
            .appendingPathComponent(TestEnvironment.uniqueName("workspace")).path
        var configuration = SandboxConfiguration()
        configuration.port = 0
        configuration.workingDirectory = workspace
        configuration.sessionAPIKey = UUID().uuidString
        configuration.noChangeTimeout = .seconds(2)
        configure(&configuration)
        let key = configuration.sessionAPIKey ?? ""
        let sandbox = SandboxServer(configuration: configuration, logger: logger)
        let client = try HTTPClient()
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        defer { try? FileManager.default.removeItem(atPath: workspace) }
        let result: Result<T, any Error> = await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await sandbox.run(shutdownSignals: []) { port in
                    portContinuation.yield(port)
                    portContinuation.finish()
                }
                portContinuation.finish()
            }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else {
                group.cancelAll()
                return .failure(DeckhandError(.internalError, "the sandbox server did not start"))
            }
            let server = Server(base: "http://127.0.0.1:\(port)", key: key, workspace: workspace, client: client)
            let result: Result<T, any Error>
            do {
                try await waitUntilAlive(server)
                result = .success(try await body(server))
            } catch {
                result = .failure(error)
            }
            group.cancelAll()
            await group.waitForAll()
            return result
        }
        await client.shutdown()
        return try result.get()
    }

    private static func waitUntilAlive(_ server: Server) async throws {
        try await eventually("the sandbox server answering /alive", timeout: .seconds(10), interval: .milliseconds(5)) {
            (try? await server.request(.get, "/alive"))?.text.contains("\"ok\"") == true
        }
    }
}
