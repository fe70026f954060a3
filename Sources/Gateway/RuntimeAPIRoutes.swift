import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import Hummingbird
import Messaging

/// The routes of `deckhand runtime-api` (PROTOCOL.md §D). Every answer is the key's user's: another user's
/// session does not exist.
struct RuntimeAPIRoutes: Sendable {
    let settings: RuntimeAPISettings
    let sessions: RuntimeSessionStore
    let bus: CommandBus
    let http: HTTPClient

    /// What a `/start` body may hold (OpenHands' `RemoteRuntime._start_runtime`).
    static let startFields: Set<String> = [
        "image", "command", "working_dir", "environment", "session_id", "resource_factor", "runtime_class",
    ]

    func add(to router: Router<GatewayRequestContext>) {
        router.get("alive") { _, _ in json(["status": "ok"]) }
        router.post("start") { request, context in try await start(request, context) }
        router.get("sessions/{session_id}") { _, context in
            let sessionID = try context.parameters.require("session_id")
            guard
                let session = try await sessions.session(
                    user: try context.requirePrincipal().userID,
                    sessionID: sessionID
                )
            else { throw Self.notFound }
            return json(.object(Self.describe(session)))
        }
        router.get("runtime/{runtime_id}") { _, context in
            let session = try await session(runtime: try context.parameters.require("runtime_id"), context)
            var answer = Self.describe(session)
            answer["restart_count"] = 0
            answer["restart_reasons"] = []
            return json(.object(answer))
        }
        router.post("pause") { request, context in try await lifecycle(.pause, request, context) }
        router.post("resume") { request, context in try await lifecycle(.resume, request, context) }
        router.post("stop") { request, context in try await lifecycle(.stop, request, context) }
        router.get("list") { _, context in
            let all = try await sessions.sessions(user: try context.requirePrincipal().userID)
            return json(["runtimes": .array(all.map { .object(Self.describe($0)) })])
        }
        router.get("registry_prefix") { _, _ in json(["registry_prefix": .string(settings.registryPrefix)]) }
        router.get("image_exists") { request, _ in
            guard let image = request.uri.queryParameters.get("image"), !image.isEmpty else {
                throw APIError.badRequest("give the image to look for: /image_exists?image=<name>")
            }
            // An image mapped to Deckhand's sandbox image is always there; one run as given is pulled by nothing
            // and must be on the backend already (its /start fails clearly when it is not): the API, which
            // reaches no backend, trusts the operator's map.
            return json(["exists": true, "image": ["upload_time": .null, "image_size_bytes": 0]])
        }
        for path in ["build", "build_status"] {
            router.on(RouterPath(path), method: path == "build" ? .post : .get) { _, _ -> Response in
                throw APIError(
                    .notImplemented,
                    .runtimeBuildNotOffered,
                    "Deckhand builds no images: /start an image that runtime_api.image_map gives to Deckhand's "
                        + "sandbox image, or one the sandbox backend has"
                )
            }
        }
    }

    /// `POST /start`: the session's runtime, started (or woken, or resumed) and answering, made when new.
    func start(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await JSONBody(request, limit: 1 << 20, allowed: Self.startFields)
        guard let sessionID = try body.string("session_id", maxLength: 200), !sessionID.isEmpty else {
            throw APIError.invalidField("`session_id` is required: a non-empty string of at most 200 characters")
        }
        guard let image = try body.string("image", maxLength: 500), !image.isEmpty else {
            throw APIError.invalidField("`image` is required")
        }
        let command = try body.strings("command") ?? []
        let workingDir = try body.string("working_dir", maxLength: 4096)
        var environment: [String: String] = [:]
        for (name, value) in try body.object("environment") ?? [:] {
            guard let value = value.stringValue else {
                throw APIError.invalidField("`environment.\(name)` must be a string")
            }
            environment[name] = value
        }
        _ = try body.string("runtime_class")
        let factor = try body.int("resource_factor", range: 1...8) ?? 1
        guard RuntimeAPISettings.resourceFactors.contains(factor) else {
            throw APIError.invalidField("`resource_factor` must be 1, 2, 4 or 8")
        }
        let asked = Asked(
            image: image,
            launch: Self.launch(of: image, command: command, workingDir: workingDir, settings: settings),
            environment: environment,
            resourceFactor: factor
        )
        var session = try await sessions.session(user: principal.userID, sessionID: sessionID)
        if let live = session?.liveSandbox {
            // The runtime workers check a running sandbox (one that died is restarted in its files, or replaced
            // when it is gone), resume a paused one and start a stopped one; a starting one is on its way.
            if live.status != .starting {
                try await provision(session!, asked)
            }
        } else {
            if settings.maxLiveRuntimes > 0,
                try await sessions.liveCount(user: principal.userID) >= settings.maxLiveRuntimes
            {
                throw APIError(
                    .tooManyRequests,
                    .runtimeTooMany,
                    "this user holds \(settings.maxLiveRuntimes) runtimes already (runtime_api.max_live_runtimes): "
                        + "stop one first"
                )
            }
            let opened = try await sessions.open(
                user: principal.userID,
                sessionID: sessionID,
                image: image,
                resourceFactor: factor
            )
            session = opened
            try await provision(opened, asked)
        }
        guard let session else { throw APIError.serverFault }
        return json(.object(Self.describe(try await ready(session, earlier: session.sandbox?.id))))
    }

    /// Waits until the session's sandbox runs (answering `/alive`), up to `runtime_api.start_timeout`: a 503 with
    /// `Retry-After` after it (the start goes on), a 502 when the start failed.
    func ready(_ session: RuntimeSession, earlier: UUID?) async throws -> RuntimeSession {
        let deadline = ContinuousClock.now + settings.startTimeout
        var pause: Duration = .milliseconds(5)
        while true {
            if let current = try await sessions.session(user: session.userID, ownerID: session.ownerID) {
                if let sandbox = current.liveSandbox, sandbox.status == .running, let url = sandbox.url,
                    await SandboxProbe.answersAlive(url, http: http)
                {
                    return current
                }
                // A start that failed: a sandbox of this start (not the one that was lost before it) in error.
                if let sandbox = current.sandbox, sandbox.status == .error, sandbox.id != earlier {
                    throw APIError(
                        .badGateway,
                        .runtimeStartFailed,
                        "the runtime failed to start: \(sandbox.reason ?? "no reason recorded")"
                    )
                }
            }
            guard ContinuousClock.now < deadline else {
                throw APIError(
                    .serviceUnavailable,
                    .unavailable,
                    "the runtime is still starting: ask GET /sessions/\(session.sessionID) or POST /start again",
                    retryAfter: 5
                )
            }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(250))
        }
    }

    /// `POST /pause|/resume|/stop` with `{runtime_id}`: sent to the runtime workers; the answer does not wait
    /// (`GET /runtime/{id}` says when it is done).
    func lifecycle(
        _ command: RuntimeCommand,
        _ request: Request,
        _ context: GatewayRequestContext
    ) async throws
        -> Response
    {
        let body = try await JSONBody(request, limit: 1 << 16, allowed: ["runtime_id"])
        guard let id = try body.string("runtime_id", maxLength: 100) else {
            throw APIError.invalidField("`runtime_id` is required")
        }
        let session = try await session(runtime: id, context)
        // A runtime that was replaced (its sandbox lost) is gone: only the session's current one takes commands.
        guard session.publicRuntimeID == session.liveSandbox?.id || session.sandbox == nil else { throw Self.notFound }
        try await send(command, session)
        return json(["runtime_id": .string(session.publicRuntimeID.uuidString.lowercased())])
    }

    func session(runtime id: String, _ context: GatewayRequestContext) async throws -> RuntimeSession {
        let principal = try context.requirePrincipal()
        guard let runtimeID = UUID(uuidString: id),
            let session = try await sessions.runtime(user: principal.userID, id: runtimeID)
        else { throw Self.notFound }
        return session
    }

    /// What a `/start` asks of the sandbox made for it.
    struct Asked {
        var image: String
        /// Set when `runtime_api.image_map` runs the image as given (nil: Deckhand's sandbox image serves it).
        var launch: SandboxLaunch?
        var environment: [String: String]
        var resourceFactor: Int
    }

    /// How `image` runs: as given with the caller's command (per `runtime_api.image_map`), or nil for Deckhand's
    /// sandbox image.
    static func launch(
        of image: String,
        command: [String],
        workingDir: String?,
        settings: RuntimeAPISettings
    ) -> SandboxLaunch? {
        switch settings.target(for: image) {
        case .sandbox: nil
        case .asGiven(let port): SandboxLaunch(command: command, workingDir: workingDir, port: port)
        }
    }

    /// Asks for the session's sandbox; one made for it gets the caller's image (when run as given),
    /// `environment` and resource factor.
    func provision(_ session: RuntimeSession, _ asked: Asked) async throws {
        try await bus.send(
            RuntimeCommand.provision.rawValue,
            ProvisionRequest(
                conversationID: session.ownerID,
                image: asked.launch == nil ? nil : asked.image,
                environment: asked.environment.isEmpty ? nil : asked.environment,
                resourceFactor: asked.resourceFactor > 1 ? asked.resourceFactor : nil,
                launch: asked.launch
            ),
            to: bus.topology.runtimeQueue
        )
    }

    func send(_ command: RuntimeCommand, _ session: RuntimeSession) async throws {
        try await bus.send(
            command.rawValue,
            SandboxTarget(conversationID: session.ownerID),
            to: bus.topology.runtimeQueue
        )
    }

    static let notFound = APIError(.notFound, .runtimeNotFound, "no runtime of that id for this key")

    /// A session as `/start`, `/sessions/{id}`, `/runtime/{id}` and `/list` describe it.
    static func describe(_ session: RuntimeSession) -> [String: JSONValue] {
        let sandbox = session.sandbox
        let live = session.liveSandbox
        return [
            "runtime_id": .string(session.publicRuntimeID.uuidString.lowercased()),
            "session_id": .string(session.sessionID),
            "status": .string(RuntimeAPIStatus.status(sandbox?.status)),
            "pod_status": .string(RuntimeAPIStatus.podStatus(sandbox?.status)),
            "url": live?.url.map(JSONValue.string) ?? .null,
            "session_api_key": live?.sessionAPIKey.map(JSONValue.string) ?? .null,
            "image": .string(session.image),
            "resource_factor": .number(Double(session.resourceFactor)),
            "work_hosts": [:],
        ]
    }
}
