import DeckhandCore
import Foundation
import LLM
import Testing

@Suite struct LLMClientTests {
    private func failure(_ status: Int, _ body: String, secret: String? = nil) -> LLMFailure {
        LLMFailure.classify(status: status, body: Array(body.utf8), retryAfter: nil, secret: secret)
    }

    @Test func errorsAreClassifiedIntoRuntimeStatuses() {
        let cases: [(Int, String, LLMFailure.Kind, RuntimeStatus, Bool)] = [
            (
                401, #"{"error":{"message":"Incorrect API key","code":"invalid_api_key"}}"#, .authentication,
                .errorLLMAuthentication, false
            ),
            (402, #"{"error":{"message":"pay up"}}"#, .outOfCredits, .errorLLMOutOfCredits, false),
            (
                429, #"{"error":{"message":"quota","code":"insufficient_quota"}}"#, .outOfCredits,
                .errorLLMOutOfCredits,
                false
            ),
            (
                429, #"{"error":{"message":"slow down","code":"rate_limit_exceeded"}}"#, .rateLimited,
                .errorLLMServiceUnavailable, true
            ),
            (
                400, #"{"error":{"message":"flagged","code":"content_filter"}}"#, .contentPolicy,
                .errorLLMContentPolicyViolation, false
            ),
            (
                400, #"{"error":{"message":"too long","code":"context_length_exceeded"}}"#, .contextWindowExceeded,
                .error,
                false
            ),
            (400, #"{"error":{"message":"bad"}}"#, .badRequest, .error, false),
            (503, "upstream down", .serviceUnavailable, .errorLLMServiceUnavailable, true),
            (500, #"{"detail":"boom"}"#, .serviceUnavailable, .errorLLMServiceUnavailable, true),
        ]
        for (status, body, kind, runtimeStatus, retryable) in cases {
            let classified = failure(status, body)
            #expect(classified.kind == kind, "\(status) \(body)")
            #expect(classified.runtimeStatus == runtimeStatus, "\(status) \(body)")
            #expect(classified.isRetryable == retryable, "\(status) \(body)")
            #expect(classified.status == status)
        }
        #expect(failure(503, "upstream down").message == "upstream down")
        #expect(failure(500, #"{"detail":"boom"}"#).message == "boom")
    }

    @Test func theKeyIsRemovedFromAProviderMessage() {
        let classified = failure(
            401,
            #"{"error":{"message":"Incorrect API key provided: sk-secret-123"}}"#,
            secret: "sk-secret-123"
        )
        #expect(!classified.message.contains("sk-secret-123"))
        #expect(!classified.description.contains("sk-secret-123"))
        #expect(classified.message.contains("<redacted>"))
    }

    @Test func retryAfterIsReadInItsThreeForms() {
        #expect(RetryAfter.parse(milliseconds: "1500", value: "9") == .milliseconds(1500))
        #expect(RetryAfter.parse(milliseconds: nil, value: "2") == .seconds(2))
        #expect(RetryAfter.parse(milliseconds: nil, value: "0.25") == .milliseconds(250))
        let now = Date(timeIntervalSince1970: 1_000_000_000)  // Sun, 09 Sep 2001 01:46:40 GMT
        #expect(RetryAfter.parse(milliseconds: nil, value: "Sun, 09 Sep 2001 01:46:50 GMT", now: now) == .seconds(10))
        #expect(RetryAfter.parse(milliseconds: nil, value: "soon") == nil)
        #expect(RetryAfter.parse(milliseconds: nil, value: nil) == nil)
    }

    @Test func backOffGrowsWithJitterAndStaysUnderTheCap() {
        let policy = RetryPolicy.exponentialJitter(maxAttempts: 8, minBackoff: .seconds(1), maxBackoff: .seconds(10))
        var random = SystemRandomNumberGenerator()
        for attempt in 1...8 {
            let base = min(pow(2, Double(attempt - 1)), 10)
            for _ in 0..<50 {
                let delay = policy.delay(afterAttempt: attempt, retryAfter: nil, using: &random)
                #expect(
                    delay >= .milliseconds(Int64(base * 500)) && delay <= .milliseconds(Int64(base * 1000)),
                    "\(attempt)"
                )
            }
        }
        #expect(policy.delay(afterAttempt: 1, retryAfter: .seconds(3)) == .seconds(3))
        #expect(policy.delay(afterAttempt: 1, retryAfter: .seconds(300)) == .seconds(10))
    }

    @Test func aResponseWithToolCallsAndUsageDecodes() throws {
        let body = """
            {"id":"chatcmpl-1","object":"chat.completion","model":"gpt-x","choices":[{"index":0,"finish_reason":"tool_calls",
            "message":{"role":"assistant","content":"Let me look.","tool_calls":[{"id":"call_1","type":"function",
            "function":{"name":"execute_bash","arguments":"{\\"command\\":\\"ls\\"}"}}]}}],
            "usage":{"prompt_tokens":120,"completion_tokens":7,"total_tokens":127,"prompt_tokens_details":{"cached_tokens":100}}}
            """
        let response = try JSONDecoder().decode(ChatResponse.self, from: Data(body.utf8))
        #expect(response.content == "Let me look.")
        #expect(response.toolCalls == [ToolCall(id: "call_1", name: "execute_bash", arguments: #"{"command":"ls"}"#)])
        #expect(response.usage == TokenUsage(promptTokens: 120, completionTokens: 7, cachedTokens: 100))
        // What is stored in llm_calls reads back the same.
        let again = try JSONDecoder().decode(ChatResponse.self, from: JSONEncoder().encode(response))
        #expect(again == response)
    }

    @Test func aRequestCarriesToolsAndImageParts() throws {
        let request = ChatRequest(
            model: "m",
            messages: [.user("look", imageURLs: ["data:image/png;base64,AA"]), .assistant(nil, toolCalls: [])],
            tools: [ToolDefinition(name: "think", description: "d", parameters: ["type": "object"])]
        )
        let json = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(request))
        #expect(json["tool_choice"] == "auto")
        #expect(
            json["tools"] == [
                [
                    "type": "function",
                    "function": ["name": "think", "description": "d", "parameters": ["type": "object"]],
                ]
            ]
        )
        #expect(
            json["messages"] == [
                [
                    "role": "user",
                    "content": [
                        ["type": "text", "text": "look"],
                        ["type": "image_url", "image_url": ["url": "data:image/png;base64,AA"]],
                    ],
                ],
                ["role": "assistant", "content": nil],
            ]
        )
    }

    @Test func pricesParseAndCost() throws {
        let table = try #require(PriceTable(parsing: "gpt-4o=2.5/10, fake=1/2"))
        let gpt = try #require(table.price(of: "gpt-4o"))
        #expect(PriceTable.cost(gpt, promptTokens: 1_000_000, completionTokens: 100_000) == 3.5)
        let routed = try #require(table.price(of: "openai/gpt-4o"))
        #expect(PriceTable.cost(routed, promptTokens: 1_000_000, completionTokens: 0) == 2.5)
        #expect(table.price(of: "unknown") == nil, "an unlisted model has no price (never a free one)")
        #expect(PriceTable(parsing: "gpt-4o=2.5") == nil)
        #expect(PriceTable(parsing: "=1/2") == nil)
    }

    @Test func llmSettingsReadTheirKeysAndNameABadOne() throws {
        let config = try DeckhandConfiguration(
            reader: ConfigurationReader(environment: [
                "DECKHAND_LLM_BASE_URL": "http://127.0.0.1:9/v1/",
                "DECKHAND_LLM_API_KEY": "sk-x",
                "DECKHAND_LLM_MODEL": "fake",
                "DECKHAND_LLM_PRICES": "fake=1/2",
                "DECKHAND_AGENT_MAX_ITERATIONS": "7",
            ])
        )
        #expect(config.llm.baseURL == "http://127.0.0.1:9/v1")
        #expect(config.llm.apiKey == "sk-x")
        #expect(config.llm.model == "fake")
        #expect(config.agent.maxIterations == 7)
        for (variable, key) in [
            ("DECKHAND_LLM_BASE_URL", "llm.base_url"), ("DECKHAND_LLM_PRICES", "llm.prices"),
            ("DECKHAND_LLM_MAX_ATTEMPTS", "llm.max_attempts"), ("DECKHAND_AGENT_MAX_BUDGET", "agent.max_budget"),
        ] {
            let error = #expect(throws: DeckhandError.self) {
                try DeckhandConfiguration(reader: ConfigurationReader(environment: [variable: "nonsense"]))
            }
            #expect(error?.message.contains(key) == true, "\(key)")
        }
    }
}
