import DeckhandCore
import Foundation
import HTTPClient
import Logging

/// Where a conversation's model answers: an OpenAI-compatible API root, its key and the model name.
public struct LLMEndpoint: Sendable, Equatable {
    public var baseURL: String
    /// A secret: never logged, never in an event or an error message.
    public var apiKey: String?
    public var model: String

    public init(baseURL: String, apiKey: String?, model: String) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.apiKey = apiKey
        self.model = model
    }

    public init(settings: LLMSettings) {
        self.init(baseURL: settings.baseURL, apiKey: settings.apiKey, model: settings.model)
    }

    /// Whether nobody configured a model: the default provider (which demands a key) and no key. A server
    /// of the operator's own (`llm.base_url`) may need none.
    public var isUnconfigured: Bool {
        (apiKey ?? "").isEmpty && baseURL == LLMSettings().baseURL
    }
}

/// One successful completion and what it took.
public struct LLMCompletion: Sendable, Equatable {
    public var response: ChatResponse
    /// Attempts made, counting the successful one.
    public var attempts: Int

    public init(response: ChatResponse, attempts: Int) {
        self.response = response
        self.attempts = attempts
    }
}

/// A Chat Completions client (DESIGN §8) over the HTTP client: tool calling, timeouts, and retries with
/// back-off on 429, 5xx and network errors that honour `Retry-After`. Failures are ``LLMFailure``s.
public struct LLMClient: Sendable {
    public let http: HTTPClient
    public let connectTimeout: Duration
    public let timeout: Duration
    public let retry: RetryPolicy
    let logger: Logger
    let sleep: @Sendable (Duration) async throws -> Void

    public init(
        http: HTTPClient,
        settings: LLMSettings,
        logger: Logger = Logger(label: "deckhand.llm"),
        sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
    ) {
        self.http = http
        connectTimeout = settings.connectTimeout
        timeout = settings.timeout
        retry = .exponentialJitter(
            maxAttempts: settings.maxAttempts,
            minBackoff: settings.retryMin,
            maxBackoff: settings.retryMax
        )
        self.logger = logger
        self.sleep = sleep
    }

    /// Asks `endpoint` for a completion of `request` (whose `model` is replaced by the endpoint's), retrying
    /// what may succeed later. Throws the last ``LLMFailure``, or `CancellationError`. `idempotencyKey` goes
    /// in an `Idempotency-Key` header on every attempt: a provider that honours it answers a repeat of the
    /// call (a retry, or a redelivered step whose first answer was never stored) without charging twice.
    public func complete(
        _ request: ChatRequest,
        endpoint: LLMEndpoint,
        idempotencyKey: String? = nil
    ) async throws -> LLMCompletion {
        var request = request
        request.model = endpoint.model
        let body = try JSONEncoder().encode(request)
        var attempt = 1
        while true {
            do {
                let response = try await once(body: [UInt8](body), endpoint: endpoint, idempotencyKey: idempotencyKey)
                return LLMCompletion(response: response, attempts: attempt)
            } catch let failure as LLMFailure where failure.isRetryable && attempt < retry.maxAttempts {
                let delay = retry.delay(afterAttempt: attempt, retryAfter: failure.retryAfter)
                logger.warning(
                    "model call failed; retrying",
                    metadata: [
                        LogKey.llmModel.rawValue: "\(endpoint.model)",
                        LogKey.llmAttempt.rawValue: "\(attempt)",
                        LogKey.error.rawValue: "\(failure)",
                        LogKey.llmRetryIn.rawValue: "\(delay)",
                    ]
                )
                try await sleep(delay)
                attempt += 1
            }
        }
    }

    /// One attempt.
    func once(body: [UInt8], endpoint: LLMEndpoint, idempotencyKey: String? = nil) async throws -> ChatResponse {
        var headers: HTTPHeaders = ["Content-Type": "application/json", "Accept": "application/json"]
        if let key = endpoint.apiKey, !key.isEmpty { headers.add(name: "Authorization", value: "Bearer \(key)") }
        if let idempotencyKey { headers.add(name: "Idempotency-Key", value: idempotencyKey) }
        let request = HTTPRequest(
            method: .post,
            url: endpoint.baseURL + "/chat/completions",
            headers: headers,
            body: body,
            connectTimeout: connectTimeout,
            timeout: timeout
        )
        let response: HTTPResponse
        do {
            response = try await http.execute(request)
        } catch let error as DeckhandError {
            let kind: LLMFailure.Kind = error.code == .httpTimeout ? .timeout : .network
            throw LLMFailure(kind, message: LLMFailure.redact(error.message, endpoint.apiKey))
        }
        guard response.isSuccess else {
            let retryAfter = RetryAfter.parse(
                milliseconds: response.headers["retry-after-ms"],
                value: response.headers["retry-after"]
            )
            throw LLMFailure.classify(
                status: response.status,
                body: response.body,
                retryAfter: retryAfter,
                secret: endpoint.apiKey
            )
        }
        do {
            return try JSONDecoder().decode(ChatResponse.self, from: Data(response.body))
        } catch {
            throw LLMFailure(
                .malformedResponse,
                status: response.status,
                message:
                    "the answer is not a Chat Completions response: \(LLMFailure.redact(String(describing: error), endpoint.apiKey).prefix(300))"
            )
        }
    }
}
