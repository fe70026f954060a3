import DeckhandCore
import DeckhandStore
import Foundation
import Gateway
import HTTPClient
import Logging
import Messaging
import Postgres
import ServiceLifecycle
import Synchronization

/// A gateway on a ``TestConversations`` bed, and a client for it that speaks for the bed's user.
public struct TestGateway: Sendable {
    /// `http://127.0.0.1:<port>`.
    public let baseURL: String
    /// An API key of the bed's user.
    public let key: String
    public let http: HTTPClient
    /// When set, every response of ``request(_:_:body:key:headers:)`` is checked against the gateway's
    /// `/openapi.json`, and one that does not match it is an error.
    public let validator: OpenAPIValidator?

    public init(baseURL: String, key: String, http: HTTPClient, validator: OpenAPIValidator? = nil) {
        self.baseURL = baseURL
        self.key = key
        self.http = http
        self.validator = validator
    }

    /// Sends a request; `key` overrides the bed user's key (nil: the default, "" sends none).
    public func request(
        _ method: HTTPRequest.Method,
        _ path: String,
        body: String? = nil,
        key: String? = nil,
        headers: [(String, String)] = []
    ) async throws -> HTTPResponse {
        var fields = headers
        let key = key ?? self.key
        if !key.isEmpty { fields.append(("Authorization", "Bearer \(key)")) }
        if body != nil, !fields.contains(where: { $0.0.lowercased() == "content-type" }) {
            fields.append(("Content-Type", "application/json"))
        }
        let response = try await http.execute(
            HTTPRequest(
                method: method,
                url: baseURL + path,
                headers: HTTPHeaders(fields),
                body: body.map { Array($0.utf8) },
                timeout: .seconds(30)
            )
        )
        if let validator,
            let problem = validator.problem(
                method: method.rawValue,
                path: path,
                status: response.status,
                contentType: response.headers["content-type"],
                body: response.body
            )
        {
            throw DeckhandError(.protocolViolation, "the response does not match /openapi.json: \(problem)")
        }
        return response
    }

    /// Creates a conversation through the API with `message` (and the scripted `model`, when given) and
    /// returns its id.
    public func createConversation(_ message: String? = "Go.", model: String? = nil) async throws -> String {
        var body: [String: JSONValue] = [:]
        if let message { body["initial_user_msg"] = .string(message) }
        if let model { body["llm_model"] = .string(model) }
        let created = try await json(.post, "/api/conversations", body: .object(body))
        guard let id = created["conversation_id"]?.stringValue else {
            throw DeckhandError(.protocolViolation, "no conversation_id in \(created.serialized)")
        }
        return id
    }

    /// Every stored event of a conversation, page by page.
    public func events(_ conversation: String) async throws -> [Event] {
        var events: [Event] = []
        while true {
            let page = try await json(
                .get,
                "/api/conversations/\(conversation)/events?start_id=\(events.count)&limit=100"
            )
            let batch = try (page["events"]?.arrayValue ?? []).map { try Event(json: $0) }
            events += batch
            if page["has_more"]?.boolValue != true || batch.isEmpty { return events }
        }
    }

    /// Sends a request and parses the JSON answer; fails unless the status is `expect`.
    public func json(
        _ method: HTTPRequest.Method,
        _ path: String,
        body: JSONValue? = nil,
        key: String? = nil,
        expect: Int = 200
    ) async throws -> JSONValue {
        let response = try await request(method, path, body: body?.serialized, key: key)
        guard response.status == expect else {
            throw DeckhandError(
                .protocolViolation,
                "\(method) \(path): expected \(expect), got \(response.status): \(response.text)"
            )
        }
        return try JSONValue(parsing: response.body)
    }
}

extension TestConversations {
    /// Registers `steps` with the fake model under a new model name, and returns the name.
    public func scripted(_ steps: [FakeLLM.Step]) -> String {
        let model = "script-\(UUID().uuidString.prefix(8).lowercased())"
        llm.register(.init(steps: steps), model: model)
        return model
    }

    /// Gateway settings for tests: any free port, short key cache.
    public static func gatewaySettings(_ configure: (inout GatewaySettings) -> Void = { _ in }) -> GatewaySettings {
        var settings = GatewaySettings()
        settings.port = 0
        settings.keyCacheTTL = .milliseconds(200)
        configure(&settings)
        return settings
    }

    /// Limits for tests: any model (each script is a model of its own) and any backend, no per-user caps.
    public static func userLimits(_ configure: (inout UserLimits) -> Void = { _ in }) -> UserLimits {
        var limits = UserLimits()
        limits.userModels = ["*"]
        limits.userBackends = RuntimeSettings.Backend.allCases
        configure(&limits)
        return limits
    }

    /// Runs a gateway on this bed (on other connections when `bus` or `postgres` is given) for the length of
    /// `body`; the client it gets checks every response against the gateway's `/openapi.json`.
    public func withGateway<T: Sendable>(
        settings: GatewaySettings = TestConversations.gatewaySettings(),
        limits: UserLimits = TestConversations.userLimits(),
        bus: CommandBus? = nil,
        postgres: PostgresClient? = nil,
        _ body: @Sendable (TestGateway) async throws -> T
    ) async throws -> T {
        let key = try await APIKeyStore(postgres: runtime.postgres).create(userID: userID, name: "test").key
        let port = AsyncStream<Int>.makeStream()
        let gateway = Gateway(
            settings: settings,
            limits: limits,
            postgres: postgres ?? runtime.postgres,
            bus: bus ?? runtime.bus,
            deployment: runtime.namespace,
            logger: Logger(label: "test.gateway"),
            onRunning: { port.continuation.yield($0) }
        )
        // A gateway that fails to start ends the stream, so the test fails instead of waiting for its port.
        let service = ClosureService {
            defer { port.continuation.finish() }
            try await gateway.run()
        }
        return try await running(service) {
            var ports = port.stream.makeAsyncIterator()
            guard let bound = await ports.next() else {
                throw DeckhandError(.unavailable, "the gateway did not start")
            }
            let baseURL = "http://127.0.0.1:\(bound)"
            let document = try await runtime.http.execute(HTTPRequest(url: baseURL + "/openapi.json"))
            let validator = try OpenAPIValidator(document: try JSONValue(parsing: document.body))
            return try await body(TestGateway(baseURL: baseURL, key: key, http: runtime.http, validator: validator))
        }
    }
}

/// A service that runs a closure.
struct ClosureService: Service {
    let body: @Sendable () async throws -> Void

    init(_ body: @escaping @Sendable () async throws -> Void) { self.body = body }

    func run() async throws { try await body() }
}

/// What a stream client saw: the events (in arrival order) and how the gateway closed the stream.
public struct StreamedEvents: Sendable {
    public var events: [JSONValue]
    /// The WebSocket close code (or, for SSE, nil), and its reason.
    public var closeCode: Int?
    public var closeReason: String?
    /// Frames that were not events (`{"type":"error",…}` answers to client frames; SSE `error` events).
    public var other: [JSONValue]

    public var ids: [Int] { events.compactMap { $0["id"]?.intValue } }
}

extension TestGateway {
    /// Reads `GET /api/conversations/<conversation>/events/stream` until `done` says so, the stream ends, or
    /// `timeout` passes (an error). `lastEventID` goes in the `Last-Event-ID` header.
    public func serverSentEvents(
        _ conversation: String,
        lastEventID: Int? = nil,
        timeout: Duration = .seconds(60),
        until done: @escaping @Sendable (StreamedEvents) -> Bool
    ) async throws -> StreamedEvents {
        var headers: [(String, String)] = [("Authorization", "Bearer \(key)"), ("Accept", "text/event-stream")]
        if let lastEventID { headers.append(("Last-Event-ID", String(lastEventID))) }
        let request = HTTPRequest(
            url: baseURL + "/api/conversations/\(conversation)/events/stream",
            headers: HTTPHeaders(headers)
        )
        let http = http
        return try await withTestTimeout(timeout, "SSE \(conversation)") {
            let response = try await http.stream(request)
            guard response.status == 200 else {
                throw DeckhandError(
                    .protocolViolation,
                    "SSE answered \(response.status): \(String(decoding: try await response.collectBody(), as: UTF8.self))"
                )
            }
            var seen = StreamedEvents(events: [], other: [])
            for try await event in response.sseEvents {
                guard let value = try? JSONValue(parsing: event.data) else { continue }
                if event.event == "event" {
                    seen.events.append(value)
                    if let id = event.id, value["id"]?.intValue != Int(id) {
                        throw DeckhandError(.protocolViolation, "SSE id \(id) does not match the event's id")
                    }
                } else {
                    seen.other.append(value)
                }
                if done(seen) { break }
            }
            return seen
        }
    }
}

/// Runs `body`, failing with `SERVICE$TIMEOUT` (naming `what`) if it has not finished after `limit`.
public func withTestTimeout<T: Sendable>(
    _ limit: Duration,
    _ what: String,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw DeckhandError(.timeout, "\(what) did not finish within \(limit)")
        }
        return value
    }
}
