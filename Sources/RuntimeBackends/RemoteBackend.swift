import DeckhandCore
import Foundation
import HTTPClient
import Logging

/// Sandboxes from a Runtime API (OpenHands' Remote Runtime API, PROTOCOL.md §D): another Deckhand's
/// `deckhand runtime-api`, or any provider of it.
///
/// A sandbox is a runtime session whose id is Deckhand's, `dh-<deployment>-<sandbox id>`, so the backend finds it
/// again by session after any restart and lists only the sessions this deployment started. The reference is
/// `<session>#<runtime id>`: a session whose runtime is no longer that one (the API replaced a lost runtime, or
/// started a new one after a stop deleted the old, as OpenHands' own service does) has a new, empty workspace,
/// so the sandbox counts as missing (lost, and the conversation told). The API decides the sandbox's URL and its
/// session key (both in what ``start(_:spec:)`` returns). A request that fails on the
/// network or with a 5xx is tried again with back-off for `remote.retry_for`, then the operation fails as
/// `unavailable` (an outage: the runtime command is retried later); a 4xx, or the 502 by which Deckhand's own API
/// says a start failed for good (`RUNTIME$START_FAILED`), is a `RUNTIME$REMOTE` failure naming the API's answer.
public struct RemoteBackend: SandboxBackend {
    public let settings: RemoteSettings
    public let deployment: String
    let client: HTTPClient
    let logger: Logger

    public var kind: RuntimeSettings.Backend { .remote }

    public init(settings: RemoteSettings, deployment: String, client: HTTPClient, logger: Logger) {
        self.settings = settings
        self.deployment = deployment
        self.client = client
        self.logger = logger
    }

    /// The session ids of this deployment's sandboxes start with it.
    var sessionPrefix: String { "dh-" + (deployment.isEmpty ? "" : deployment + "-") }

    func sessionID(of sandbox: UUID) -> String { sessionPrefix + sandbox.uuidString.lowercased() }

    /// The session and the runtime a reference names (a reference without `#` names any runtime of the session).
    static func parse(_ reference: String) -> (session: String, runtime: String?) {
        guard let mark = reference.firstIndex(of: "#") else { return (reference, nil) }
        return (String(reference[..<mark]), String(reference[reference.index(after: mark)...]))
    }

    static func reference(session: String, runtime: String) -> String { session + "#" + runtime }

    /// One runtime as the API describes it (`/sessions/{id}`, `/list`).
    struct Runtime {
        var runtimeID: String
        var status: String
        var podStatus: String?
        var url: String?
        var sessionAPIKey: String?

        init?(_ json: JSONValue) {
            guard let id = json["runtime_id"]?.stringValue else { return nil }
            runtimeID = id
            status = json["status"]?.stringValue ?? ""
            podStatus = json["pod_status"]?.stringValue?.lowercased()
            url = json["url"]?.stringValue
            sessionAPIKey = json["session_api_key"]?.stringValue
        }

        /// What Deckhand makes of it. `stopped` is a runtime that may start again with its files (another
        /// provider's `/stop` deletes it: it is then no longer found); a `failed` one is gone.
        var state: SandboxBackendState {
            if podStatus == "failed" { return .missing }
            switch status {
            case "running": return podStatus == "ready" ? .running : .created
            case "paused": return .paused
            case "stopped": return .stopped
            default: return .missing
            }
        }
    }

    public func create(_ spec: SandboxSpec) async throws -> String {
        let session = sessionID(of: spec.id)
        let runtime = try await startSession(session, spec: spec)
        return Self.reference(session: session, runtime: runtime.runtimeID)
    }

    public func start(_ reference: String, spec: SandboxSpec) async throws -> StartedSandbox {
        let (sessionID, expected) = Self.parse(reference)
        let runtime = try await session(sessionID)
        switch runtime?.state {
        case .paused?:
            try await post("/resume", ["runtime_id": .string(runtime!.runtimeID)])
        case .running?, .created?:
            break
        case .stopped?, .missing?, nil:
            _ = try await startSession(sessionID, spec: spec)
        }
        let ready = try await waitUntilReady(sessionID)
        if let expected, ready.runtimeID != expected {
            throw DeckhandError(
                .runtimeLost,
                "the Runtime API runs runtime \(ready.runtimeID) for the session now, not \(expected): its workspace is gone"
            )
        }
        guard let url = ready.url, !url.isEmpty else {
            throw DeckhandError(.runtimeBackend, "the Runtime API gave runtime \(ready.runtimeID) no url")
        }
        return StartedSandbox(url: url, sessionAPIKey: ready.sessionAPIKey)
    }

    public func stop(_ reference: String) async throws {
        try await command("/stop", reference)
    }

    public func pause(_ reference: String) async throws {
        try await command("/pause", reference)
    }

    public func resume(_ reference: String) async throws {
        try await command("/resume", reference)
    }

    /// `/stop`: the API has no other way to end a runtime (OpenHands' own service deletes it on stop).
    public func destroy(_ reference: String) async throws {
        try await command("/stop", reference)
    }

    public func inspect(_ reference: String) async throws -> SandboxBackendState {
        let (sessionID, expected) = Self.parse(reference)
        guard let runtime = try await session(sessionID) else { return .missing }
        if let expected, runtime.runtimeID != expected { return .missing }
        return runtime.state
    }

    public func list() async throws -> [ListedSandbox] {
        let answer = try await call(.get, "/list")
        let prefix = sessionPrefix
        return (answer["runtimes"]?.arrayValue ?? []).compactMap { item in
            guard let session = item["session_id"]?.stringValue, session.hasPrefix(prefix),
                let sandbox = UUID(uuidString: String(session.dropFirst(prefix.count))),
                let runtime = Runtime(item)
            else { return nil }
            return ListedSandbox(
                sandboxID: sandbox,
                reference: Self.reference(session: session, runtime: runtime.runtimeID),
                state: runtime.state
            )
        }
    }

    // MARK: Requests

    /// `POST /start` for the session (idempotent at the API: a session's live runtime is answered): the image
    /// and command the spec runs as given (a Runtime API caller's, passed on), else `remote.image` (or the
    /// worker's image) with `remote.command`.
    func startSession(_ session: String, spec: SandboxSpec) async throws -> Runtime {
        let image = spec.launch == nil ? (settings.image ?? spec.image) : spec.image
        let command = spec.launch?.command ?? settings.command
        let workingDir = spec.launch?.workingDir ?? settings.workingDir
        let body: JSONValue = [
            "image": .string(image), "command": .array(command.map(JSONValue.string)),
            "working_dir": .string(workingDir),
            "environment": .object(spec.environment.mapValues(JSONValue.string)), "session_id": .string(session),
            "resource_factor": .number(
                Double(RuntimeAPISettings.resourceFactors.last { $0 <= spec.resourceFactor } ?? 1)
            ),
        ]
        // A start may take as long as the runtime takes to be ready (Deckhand's API answers only then).
        let answer = try await call(.post, "/start", body: body, timeout: max(settings.timeout, settings.startTimeout))
        guard let runtime = Runtime(answer) else {
            throw DeckhandError(.runtimeBackend, "the Runtime API's /start answered no runtime_id")
        }
        return runtime
    }

    /// The session's runtime; nil when the API has none (404).
    func session(_ session: String) async throws -> Runtime? {
        do {
            return Runtime(try await call(.get, "/sessions/\(session)"))
        } catch let error as RemoteAnswer where error.status == 404 {
            return nil
        }
    }

    /// A pause, resume or stop of the session's runtime; a session the API does not have, or whose runtime is no
    /// longer the one named, is already stopped.
    func command(_ path: String, _ reference: String) async throws {
        let (sessionID, expected) = Self.parse(reference)
        guard let runtime = try await session(sessionID), expected == nil || runtime.runtimeID == expected else {
            return
        }
        do {
            try await post(path, ["runtime_id": .string(runtime.runtimeID)])
        } catch let error as RemoteAnswer where error.status == 404 {
            return
        }
    }

    func post(_ path: String, _ body: JSONValue) async throws {
        _ = try await call(.post, path, body: body)
    }

    /// Polls the session until its runtime is `ready` (`remote.start_timeout`); a `failed` one is an error.
    func waitUntilReady(_ reference: String) async throws -> Runtime {
        let deadline = ContinuousClock.now + settings.startTimeout
        var pause: Duration = .milliseconds(50)
        while true {
            if let runtime = try await session(reference) {
                if runtime.podStatus == "failed" || runtime.podStatus == "crashloopbackoff" {
                    throw DeckhandError(.runtimeBackend, "the remote runtime \(runtime.runtimeID) failed to start")
                }
                if runtime.status == "running", runtime.podStatus == "ready" { return runtime }
            }
            guard ContinuousClock.now < deadline else {
                throw DeckhandError(
                    .runtimeNotAlive,
                    "the remote runtime of \(reference) was not ready within \(settings.startTimeout)"
                )
            }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(2))
        }
    }

    /// A 4xx answer of the API.
    struct RemoteAnswer: Error, CustomStringConvertible {
        var status: Int
        var message: String
        var description: String { "the Runtime API answered \(status): \(message)" }
    }

    /// One request, retried on network errors and 5xx (but a failed start) for `remote.retry_for`; its JSON answer.
    func call(
        _ method: HTTPRequest.Method,
        _ path: String,
        body: JSONValue? = nil,
        timeout: Duration? = nil
    ) async throws -> JSONValue {
        let deadline = ContinuousClock.now + settings.retryFor
        var backoff = Backoff(minimum: .milliseconds(100), maximum: .seconds(5))
        while true {
            var request = HTTPRequest(method: method, url: (settings.url ?? "") + path)
            request.timeout = timeout ?? settings.timeout
            request.headers.replaceOrAdd(name: "X-API-Key", value: settings.apiKey)
            if let body {
                request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
                request.body = Array(body.serialized.utf8)
            }
            let failure: String
            do {
                let response = try await client.execute(request)
                switch response.status {
                case 200..<300:
                    return try JSONValue(parsing: response.body)
                case 400..<500:
                    let answer = try? JSONValue(parsing: response.body)
                    let message =
                        answer?["message"]?.stringValue ?? answer?["detail"]?.stringValue
                        ?? String(response.text.prefix(300))
                    if response.status == 404 { throw RemoteAnswer(status: 404, message: message) }
                    throw DeckhandError(
                        .runtimeRemote,
                        "\(method) \(path): the Runtime API answered \(response.status): \(message)"
                    )
                default:
                    let answer = try? JSONValue(parsing: response.body)
                    // Deckhand's runtime API says when a start failed for good: trying again fails the same way.
                    if answer?["code"]?.stringValue == DeckhandError.Code.runtimeStartFailed.rawValue {
                        throw DeckhandError(
                            .runtimeRemote,
                            "\(method) \(path): the Runtime API answered \(response.status): "
                                + (answer?["message"]?.stringValue ?? "the runtime failed to start")
                        )
                    }
                    failure = "\(method) \(path) answered \(response.status)"
                }
            } catch let error as DeckhandError where error.code.rawValue.hasPrefix("HTTP$") {
                failure = "\(method) \(path): \(error.message)"
            }
            guard ContinuousClock.now < deadline else {
                throw DeckhandError(
                    .unavailable,
                    "the Runtime API at \(settings.url ?? "") does not answer (\(failure))"
                )
            }
            logger.debug("the Runtime API failed; trying again", metadata: [LogKey.error.rawValue: "\(failure)"])
            try await Task.sleep(for: backoff.next())
        }
    }
}

extension DeckhandError.Code {
    /// The Runtime API of the `remote` backend refused a request (a 4xx).
    public static let runtimeRemote: Self = "RUNTIME$REMOTE"
}
