import DeckhandCore
import Foundation

/// Why a completion failed, classified the way the agent and the user need it: retry or not, and which
/// `STATUS$ERROR_LLM_*` the conversation shows.
public struct LLMFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// 401/403: the key is missing, wrong or not allowed.
        case authentication
        /// 402, or a 429 for an exhausted quota.
        case outOfCredits
        /// The provider refused the content.
        case contentPolicy
        /// The prompt is longer than the model's context window.
        case contextWindowExceeded
        /// Any other 4xx: the request itself is wrong.
        case badRequest
        /// 429: too many requests for now.
        case rateLimited
        /// 5xx, 408, 409: the provider is failing for now.
        case serviceUnavailable
        /// No connection or a cut one.
        case network
        /// The request took longer than `llm.timeout`.
        case timeout
        /// A 2xx whose body is not a Chat Completions response.
        case malformedResponse
    }

    public var kind: Kind
    /// The HTTP status, when the server answered.
    public var status: Int?
    /// A readable reason (the provider's message, without any key).
    public var message: String
    /// How long the server asked us to wait (`Retry-After`).
    public var retryAfter: Duration?

    public init(_ kind: Kind, status: Int? = nil, message: String, retryAfter: Duration? = nil) {
        self.kind = kind
        self.status = status
        self.message = message
        self.retryAfter = retryAfter
    }

    /// Whether trying again later may succeed.
    public var isRetryable: Bool {
        switch kind {
        case .rateLimited, .serviceUnavailable, .network, .timeout, .malformedResponse: return true
        case .authentication, .outOfCredits, .contentPolicy, .contextWindowExceeded, .badRequest: return false
        }
    }

    /// The runtime status a conversation shows when its model fails this way.
    public var runtimeStatus: RuntimeStatus {
        switch kind {
        case .authentication: return .errorLLMAuthentication
        case .outOfCredits: return .errorLLMOutOfCredits
        case .contentPolicy: return .errorLLMContentPolicyViolation
        case .rateLimited, .serviceUnavailable, .network, .timeout, .malformedResponse:
            return .errorLLMServiceUnavailable
        case .contextWindowExceeded, .badRequest: return .error
        }
    }

    public var description: String {
        if let status { return "LLM \(kind.rawValue) (HTTP \(status)): \(message)" }
        return "LLM \(kind.rawValue): \(message)"
    }

    /// `text` without `secret` (some providers echo part of a key in their messages).
    static func redact(_ text: String, _ secret: String?) -> String {
        guard let secret, !secret.isEmpty else { return text }
        return text.replacingOccurrences(of: secret, with: "<redacted>")
    }

    /// Classifies an HTTP error answer from an OpenAI-compatible server. `secret` (the API key) is removed
    /// from the provider's message, which some providers echo in part.
    public static func classify(
        status: Int,
        body: [UInt8],
        retryAfter: Duration?,
        secret: String?
    ) -> LLMFailure {
        let json = try? JSONValue(parsing: body)
        let error = json?["error"]
        let providerMessage =
            error?["message"]?.stringValue ?? error?.stringValue ?? json?["message"]?.stringValue
            ?? json?["detail"]?.stringValue ?? String(decoding: body.prefix(300), as: UTF8.self)
        let code = (error?["code"]?.stringValue ?? "") + " " + (error?["type"]?.stringValue ?? "")
        let text = (code + " " + providerMessage).lowercased()
        let message = redact(String(providerMessage.prefix(500)), secret)

        let kind: Kind
        switch status {
        case 401, 403:
            kind = .authentication
        case 402:
            kind = .outOfCredits
        case 429:
            kind = text.contains("insufficient_quota") || text.contains("credit") ? .outOfCredits : .rateLimited
        case 400, 422:
            if text.contains("context_length") || text.contains("context window") || text.contains("maximum context") {
                kind = .contextWindowExceeded
            } else if text.contains("content_filter") || text.contains("content_policy")
                || text.contains("content management policy")
            {
                kind = .contentPolicy
            } else {
                kind = .badRequest
            }
        case 408, 409, 500...599:
            kind = .serviceUnavailable
        default:
            kind = .badRequest
        }
        return LLMFailure(
            kind,
            status: status,
            message: message.isEmpty ? "HTTP \(status)" : message,
            retryAfter: retryAfter
        )
    }
}
