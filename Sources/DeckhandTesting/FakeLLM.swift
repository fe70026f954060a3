import DeckhandCore
import Foundation
import HTTPTypes
import Hummingbird
import LLM
import NIOCore
import Synchronization

/// A scripted OpenAI-compatible Chat Completions server on 127.0.0.1, for tests and benchmarks.
///
/// Each conversation names a script through its model (`llm_model`); the script's steps are the answers in
/// order. The answer to a request is chosen by the number of assistant messages in its history, so a
/// repeated request (a redelivered step) gets the same answer. A step can add latency, fail a number of
/// times first (429 with `Retry-After`, 500, …), and carry malformed tool arguments. A request without
/// tools is a condensation's request for a summary. Every request is logged.
public final class FakeLLM: Sendable {
    /// The answers for one model name.
    public struct Script: Codable, Sendable {
        public var steps: [Step]
        /// When set, requests must carry `Authorization: Bearer <apiKey>` (else 401).
        public var apiKey: String?
        /// Answer in the order requests arrive instead of by the history's assistant messages (for histories
        /// that condensation shortens; a repeated request then gets the next answer).
        public var sequential: Bool

        public init(steps: [Step], apiKey: String? = nil, sequential: Bool = false) {
            self.steps = steps
            self.apiKey = apiKey
            self.sequential = sequential
        }

        enum CodingKeys: String, CodingKey {
            case steps
            case apiKey = "api_key"
            case sequential
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            steps = try container.decode([Step].self, forKey: .steps)
            apiKey = try container.decodeIfPresent(String.self, forKey: .apiKey)
            sequential = try container.decodeIfPresent(Bool.self, forKey: .sequential) ?? false
        }
    }

    /// One answer.
    public struct Step: Codable, Sendable {
        public var content: String?
        public var toolCalls: [Call]
        public var latencyMilliseconds: Int?
        public var failures: [Failure]
        public var promptTokens: Int?
        public var completionTokens: Int?

        public init(
            content: String? = nil,
            toolCalls: [Call] = [],
            latencyMilliseconds: Int? = nil,
            failures: [Failure] = [],
            promptTokens: Int? = nil,
            completionTokens: Int? = nil
        ) {
            self.content = content
            self.toolCalls = toolCalls
            self.latencyMilliseconds = latencyMilliseconds
            self.failures = failures
            self.promptTokens = promptTokens
            self.completionTokens = completionTokens
        }

        enum CodingKeys: String, CodingKey {
            case content
            case toolCalls = "tool_calls"
            case latencyMilliseconds = "latency_ms"
            case failures
            case promptTokens = "prompt_tokens"
            case completionTokens = "completion_tokens"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            content = try container.decodeIfPresent(String.self, forKey: .content)
            toolCalls = try container.decodeIfPresent([Call].self, forKey: .toolCalls) ?? []
            latencyMilliseconds = try container.decodeIfPresent(Int.self, forKey: .latencyMilliseconds)
            failures = try container.decodeIfPresent([Failure].self, forKey: .failures) ?? []
            promptTokens = try container.decodeIfPresent(Int.self, forKey: .promptTokens)
            completionTokens = try container.decodeIfPresent(Int.self, forKey: .completionTokens)
        }

        /// A step that runs a shell command.
        public static func bash(_ command: String, content: String? = nil) -> Step {
            Step(content: content, toolCalls: [Call(name: "execute_bash", arguments: ["command": .string(command)])])
        }

        /// A step that ends the task.
        public static func finish(_ message: String) -> Step {
            Step(toolCalls: [Call(name: "finish", arguments: ["message": .string(message)])])
        }

        /// A reply without a tool call (the agent waits for the user).
        public static func reply(_ text: String) -> Step {
            Step(content: text)
        }
    }

    /// A tool call; `arguments` is sent as JSON text, or as is when it is a string (to send malformed JSON).
    public struct Call: Codable, Sendable {
        public var name: String
        public var arguments: JSONValue

        public init(name: String, arguments: JSONValue) {
            self.name = name
            self.arguments = arguments
        }
    }

    /// An error answered `times` times before the step's answer.
    public struct Failure: Codable, Sendable {
        public var status: Int
        public var retryAfter: Double?
        public var times: Int
        public var body: String?

        public init(status: Int, retryAfter: Double? = nil, times: Int = 1, body: String? = nil) {
            self.status = status
            self.retryAfter = retryAfter
            self.times = times
            self.body = body
        }

        enum CodingKeys: String, CodingKey {
            case status
            case retryAfter = "retry_after"
            case times, body
        }
    }

    /// One request the server received.
    public struct Request: Sendable {
        public var model: String
        /// The script step it asked for (assistant messages in its history).
        public var index: Int
        /// The HTTP status answered.
        public var status: Int
        /// A condensation's request for a summary.
        public var isSummary: Bool
        public var messages: [ChatMessage]
        /// When it arrived.
        public var at: Date
        /// Its `Idempotency-Key` header.
        public var idempotencyKey: String?
    }

    struct State {
        var scripts: [String: Script] = [:]
        var failuresServed: [String: Int] = [:]
        var answered: [String: Int] = [:]
        var arrived: [String: Int] = [:]
        var log: [Request] = []
    }

    private let state = Mutex(State())
    /// Added to every answer unless its step says otherwise.
    public let latency: Duration

    public init(latency: Duration = .zero) {
        self.latency = latency
    }

    /// Installs `script` for requests naming `model`.
    public func register(_ script: Script, model: String) {
        state.withLock { $0.scripts[model] = script }
    }

    /// Installs a script given as JSON (`{"steps": [...], "api_key": ...}`).
    public func register(json: String, model: String) throws {
        register(try JSONDecoder().decode(Script.self, from: Data(json.utf8)), model: model)
    }

    /// Every request so far, in arrival order.
    public var requests: [Request] { state.withLock { $0.log } }

    /// How many requests naming `model` have arrived, answered or not (the log records a request once it is
    /// answered, after its latency).
    public func arrivals(model: String) -> Int { state.withLock { $0.arrived[model] ?? 0 } }

    /// How many requests have arrived in all.
    public var totalArrivals: Int { state.withLock { $0.arrived.values.reduce(0, +) } }

    /// The requests that named `model`.
    public func requests(model: String) -> [Request] { requests.filter { $0.model == model } }

    /// Runs `body` with a server on `host` (127.0.0.1 unless a test's containers must reach it) and its base URL
    /// (`http://<host>:<port>/v1`).
    public func serve<T: Sendable>(
        host: String = "127.0.0.1",
        _ body: @Sendable (_ baseURL: String) async throws -> T
    ) async throws -> T {
        let router = Router()
        for path in ["v1/chat/completions", "chat/completions"] {
            router.post(RouterPath(path)) { request, _ -> Response in
                let bytes = try await request.body.collect(upTo: 64 << 20)
                return try await self.answer(
                    body: Data(bytes.readableBytesView),
                    authorization: request.headers[.authorization],
                    idempotencyKey: request.headers[HTTPField.Name("Idempotency-Key")!]
                )
            }
        }
        return try await LoopbackHTTPServer.serve(router, host: host) { port in
            try await body("http://\(host):\(port)/v1")
        }
    }

    func answer(body: Data, authorization: String?, idempotencyKey: String? = nil) async throws -> Response {
        let received = Date()
        struct Messages: Decodable {
            var messages: [ChatMessage]
        }
        guard let json = try? JSONValue(parsing: body), let model = json["model"]?.stringValue,
            let messages = try? JSONDecoder().decode(Messages.self, from: body).messages
        else {
            return Self.error(400, "the body is not a chat completion request")
        }
        let isSummary = json["tools"] == nil
        let historyIndex = messages.filter { $0.role == .assistant }.count
        state.withLock { $0.arrived[model, default: 0] += 1 }

        enum Plan {
            case fail(Failure)
            case answer(Step?)
            case unauthorized
            case unknown
        }
        let (plan, index) = state.withLock { state -> (Plan, Int) in
            guard let script = state.scripts[model] else { return (.unknown, historyIndex) }
            if let expected = script.apiKey, authorization != "Bearer \(expected)" {
                return (.unauthorized, historyIndex)
            }
            if isSummary { return (.answer(nil), historyIndex) }
            let index = script.sequential ? state.answered[model, default: 0] : historyIndex
            let key = "\(model)#\(index)"
            let step = index < script.steps.count ? script.steps[index] : Step.finish("The script has ended.")
            var served = state.failuresServed[key, default: 0]
            for failure in step.failures {
                if served < failure.times {
                    state.failuresServed[key] = state.failuresServed[key, default: 0] + 1
                    return (.fail(failure), index)
                }
                served -= failure.times
            }
            state.answered[model, default: 0] += 1
            return (.answer(step), index)
        }
        let status: Int
        let response: Response
        switch plan {
        case .unknown:
            (status, response) = (404, Self.error(404, "The model `\(model)` does not exist", code: "model_not_found"))
        case .unauthorized:
            (status, response) = (401, Self.error(401, "Incorrect API key provided.", code: "invalid_api_key"))
        case .fail(let failure):
            var headers: HTTPFields = [.contentType: "application/json"]
            if let seconds = failure.retryAfter { headers[.retryAfter] = String(seconds) }
            let text = failure.body ?? #"{"error":{"message":"injected failure","type":"server_error"}}"#
            status = failure.status
            response = Response(
                status: .init(code: failure.status),
                headers: headers,
                body: ResponseBody(byteBuffer: ByteBuffer(string: text))
            )
        case .answer(let step):
            let delay = step?.latencyMilliseconds.map { Duration.milliseconds($0) } ?? latency
            if delay > .zero { try await Task.sleep(for: delay) }
            let promptTokens = step?.promptTokens ?? max(1, body.count / 4)
            var message: JSONValue = ["role": "assistant", "content": nil]
            if let step {
                message["content"] = JSONValue(step.content)
                if !step.toolCalls.isEmpty {
                    message["tool_calls"] = .array(
                        step.toolCalls.enumerated().map { offset, call in
                            let arguments = call.arguments.stringValue ?? call.arguments.serialized
                            return [
                                "id": .string("call_\(index)_\(offset)"), "type": "function",
                                "function": ["name": .string(call.name), "arguments": .string(arguments)],
                            ]
                        }
                    )
                }
            } else {
                message["content"] = .string("Summary: the agent worked on the task (\(messages.count) messages).")
            }
            let answer: JSONValue = [
                "id": .string("chatcmpl-\(model)-\(index)"), "object": "chat.completion", "model": .string(model),
                "choices": [
                    [
                        "index": 0, "message": message,
                        "finish_reason": step?.toolCalls.isEmpty == false ? "tool_calls" : "stop",
                    ]
                ],
                "usage": [
                    "prompt_tokens": .number(Double(promptTokens)),
                    "completion_tokens": .number(Double(step?.completionTokens ?? 10)),
                    "total_tokens": .number(Double(promptTokens + (step?.completionTokens ?? 10))),
                ],
            ]
            status = 200
            response = Response(
                status: .ok,
                headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: answer.serialized))
            )
        }
        let entry = Request(
            model: model,
            index: index,
            status: status,
            isSummary: isSummary,
            messages: messages,
            at: received,
            idempotencyKey: idempotencyKey
        )
        state.withLock { $0.log.append(entry) }
        return response
    }

    static func error(_ status: Int, _ message: String, code: String = "invalid_request_error") -> Response {
        let body: JSONValue = [
            "error": ["message": .string(message), "type": "invalid_request_error", "code": .string(code)]
        ]
        return Response(
            status: .init(code: status),
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body.serialized))
        )
    }
}
