import DeckhandCore
import Foundation
import HTTPClient
import RuntimeBackends

/// Just enough of the Docker Engine API (over its unix socket, through the HTTP client) for tests to run a
/// container (create, start, logs, remove) and to fault one (kill, pause).
public struct TestDocker: Sendable {
    public let socket: String
    let client: HTTPClient

    public init(socket: String = TestEnvironment.dockerSocket, client: HTTPClient) {
        self.socket = socket
        self.client = client
    }

    private func call(_ method: HTTPRequest.Method, _ path: String, body: JSONValue? = nil) async throws -> HTTPResponse
    {
        var request = HTTPRequest(method: method, url: "http://localhost/v1.41" + path, unixSocketPath: socket)
        request.timeout = .seconds(60)
        if let body {
            request.body = Array(try JSONEncoder().encode(body))
            request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        }
        do {
            return try await client.execute(request)
        } catch {
            throw TestEnvironment.serviceMissing("The Docker engine", at: socket, error)
        }
    }

    /// Whether an image exists locally.
    public func imageExists(_ image: String) async throws -> Bool {
        try await call(.get, "/images/\(image)/json").status == 200
    }

    /// Creates and starts a container on the host network; returns its id.
    public func run(
        image: String,
        name: String,
        arguments: [String],
        environment: [String: String]
    ) async throws -> String {
        let body: JSONValue = [
            "Image": .string(image),
            "Cmd": .array(arguments.map { .string($0) }),
            "Env": .array(environment.map { .string("\($0.key)=\($0.value)") }),
            "Labels": ["deckhand.test": "true"],
            "HostConfig": ["NetworkMode": "host"],
        ]
        let created = try await call(.post, "/containers/create?name=\(name)", body: body)
        guard created.status == 201, case .object(let object) = try created.decode(JSONValue.self),
            let id = object["Id"]?.stringValue
        else {
            throw DeckhandError(.protocolViolation, "creating the container failed: \(created.status) \(created.text)")
        }
        let started = try await call(.post, "/containers/\(id)/start")
        guard started.status == 204 else {
            throw DeckhandError(.protocolViolation, "starting the container failed: \(started.status) \(started.text)")
        }
        return id
    }

    /// The engine's description of a container (`GET /containers/{id}/json`).
    public func inspect(_ id: String) async throws -> JSONValue {
        try await call(.get, "/containers/\(id)/json").expectSuccess().decode(JSONValue.self)
    }

    /// The container's output so far (stdout and stderr, with Docker's stream framing removed).
    public func logs(_ id: String) async throws -> String {
        let response = try await call(.get, "/containers/\(id)/logs?stdout=true&stderr=true")
        return DockerBackend.demultiplex(response.body)
    }

    /// Kills the container's processes (SIGKILL), as an OOM kill or a daemon restart would: it exits, its
    /// files stay.
    public func kill(_ id: String) async throws {
        try expect(204, from: await call(.post, "/containers/\(id)/kill"), doing: "kill the container")
    }

    /// Freezes the container behind its owner's back.
    public func pause(_ id: String) async throws {
        try expect(204, from: await call(.post, "/containers/\(id)/pause"), doing: "pause the container")
    }

    private func expect(_ status: Int, from response: HTTPResponse, doing operation: String) throws {
        guard response.status == status else {
            throw DeckhandError(.protocolViolation, "could not \(operation): \(response.status) \(response.text)")
        }
    }

    /// Removes the container, running or not.
    public func remove(_ id: String) async throws {
        _ = try await call(.delete, "/containers/\(id)?force=true")
    }

    /// The names of the engine's networks that start with `prefix`.
    public func networks(named prefix: String) async throws -> [String] {
        guard case .array(let networks) = try await call(.get, "/networks").decode(JSONValue.self) else { return [] }
        return networks.compactMap { $0["Name"]?.stringValue }.filter { $0.hasPrefix(prefix) }
    }

    /// Removes a network (one that is gone already is fine).
    public func removeNetwork(_ name: String) async throws {
        _ = try await call(.delete, "/networks/\(name)")
    }
}
