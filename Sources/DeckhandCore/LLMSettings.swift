/// How conversation workers reach the model (`llm.*` keys): an OpenAI-compatible Chat Completions API.
public struct LLMSettings: Sendable {
    /// `llm.base_url`: the API root; requests go to `<base_url>/chat/completions`.
    public var baseURL: String = "https://api.openai.com/v1"
    /// `llm.api_key`: sent as `Authorization: Bearer`; empty for servers that want none. A secret: never logged.
    public var apiKey: String? = nil
    /// `llm.model`: the model of a conversation that names none.
    public var model: String = "gpt-4o"
    /// `llm.connect_timeout`: how long connecting to the API may take.
    public var connectTimeout: Duration = .seconds(10)
    /// `llm.timeout`: how long one completion request may take, response included.
    public var timeout: Duration = .seconds(300)
    /// `llm.max_attempts`: attempts of one completion, counting the first, on 429, 5xx and network errors.
    public var maxAttempts: Int = 6
    /// `llm.retry_min`: the first back-off (doubling, with jitter).
    public var retryMin: Duration = .seconds(2)
    /// `llm.retry_max`: the longest back-off, and the most a `Retry-After` is honoured.
    public var retryMax: Duration = .seconds(60)
    /// `llm.temperature`: sampling temperature; unset leaves the server's default.
    public var temperature: Double? = nil
    /// `llm.prices`: USD per million prompt and completion tokens, per model.
    public var prices: PriceTable = .init()
    /// `llm.default_price`: the price of a model `llm.prices` does not list; nil: such a model cannot run
    /// under a budget (it is refused rather than counted as free).
    public var defaultPrice: PriceTable.Price? = nil
    /// `llm.user_models`: the models a caller may name besides `llm.model` (`*`: any).
    public var userModels: [String] = []
    /// `llm.key_secret`: 32 bytes (64 hex digits) that encrypt the model keys stored per conversation; nil: no
    /// such key may be stored. A secret: never logged.
    public var keySecret: [UInt8]? = nil

    public init() {}

    static let keys: Set<String> = [
        "llm.base_url", "llm.api_key", "llm.model", "llm.connect_timeout", "llm.timeout", "llm.max_attempts",
        "llm.retry_min", "llm.retry_max", "llm.temperature", "llm.prices", "llm.default_price", "llm.user_models",
        "llm.key_secret",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        if let url = reader.optionalString("llm.base_url") {
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                throw reader.invalid("llm.base_url", expected: "an http:// or https:// URL", got: url)
            }
            baseURL = url.hasSuffix("/") ? String(url.dropLast()) : url
        }
        apiKey = reader.optionalString("llm.api_key")
        model = reader.optionalString("llm.model") ?? model
        connectTimeout = try reader.duration("llm.connect_timeout", default: connectTimeout, minimum: .milliseconds(1))
        timeout = try reader.duration("llm.timeout", default: timeout, minimum: .milliseconds(1))
        maxAttempts = try reader.int("llm.max_attempts", default: maxAttempts, range: 1...100)
        retryMin = try reader.duration("llm.retry_min", default: retryMin, minimum: .milliseconds(1))
        retryMax = try reader.duration("llm.retry_max", default: retryMax, minimum: retryMin)
        if let text = reader.optionalString("llm.temperature") {
            guard let value = Double(text), (0...2).contains(value) else {
                throw reader.invalid("llm.temperature", expected: "a number from 0 to 2", got: text)
            }
            temperature = value
        }
        if let text = reader.optionalString("llm.prices") {
            guard let table = PriceTable(parsing: text) else {
                throw reader.invalid(
                    "llm.prices",
                    expected:
                        "a comma-separated list of model=prompt/completion USD per million tokens, such as `gpt-4o=2.5/10`",
                    got: text
                )
            }
            prices = table
        }
        if let text = reader.optionalString("llm.default_price") {
            guard let price = PriceTable.Price(parsing: text) else {
                throw reader.invalid(
                    "llm.default_price",
                    expected: "prompt/completion USD per million tokens, such as `5/15`",
                    got: text
                )
            }
            defaultPrice = price
        }
        if let text = reader.optionalString("llm.key_secret") {
            guard let bytes = Self.hexBytes(text), bytes.count == 32 else {
                // A secret: name the key and the shape only.
                throw DeckhandError(
                    .invalidConfiguration,
                    "llm.key_secret: expected 64 hex digits (32 bytes; `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`); the value is not shown"
                )
            }
            keySecret = bytes
        }
        if let text = reader.optionalString("llm.user_models") {
            userModels = text.split(separator: ",").map { String($0.trimmingWhitespace()) }.filter { !$0.isEmpty }
        }
    }
}

extension LLMSettings {
    /// The bytes of a hex string, nil when it is not one.
    static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = Self.nibble(digits[index]), let low = Self.nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// What a model's tokens cost: USD per million prompt and completion tokens, by model name.
public struct PriceTable: Sendable, Equatable {
    public struct Price: Sendable, Equatable {
        public var promptPerMillion: Double
        public var completionPerMillion: Double

        public init(promptPerMillion: Double, completionPerMillion: Double) {
            self.promptPerMillion = promptPerMillion
            self.completionPerMillion = completionPerMillion
        }

        /// Parses `2.5/10` (prompt/completion USD per million tokens).
        public init?<S: StringProtocol>(parsing text: S) {
            let parts = text.split(separator: "/")
            guard parts.count == 2, let prompt = Double(parts[0].trimmingWhitespace()),
                let completion = Double(parts[1].trimmingWhitespace()), prompt >= 0, completion >= 0,
                prompt.isFinite, completion.isFinite
            else { return nil }
            self.init(promptPerMillion: prompt, completionPerMillion: completion)
        }
    }

    public var prices: [String: Price]

    public init(_ prices: [String: Price] = [:]) {
        self.prices = prices
    }

    /// Parses `gpt-4o=2.5/10, fake=1/2`.
    public init?(parsing text: String) {
        var prices: [String: Price] = [:]
        for item in text.split(separator: ",") {
            let entry = item.trimmingWhitespace()
            guard let equals = entry.lastIndex(of: "=") else { return nil }
            let model = entry[..<equals].trimmingWhitespace()
            guard !model.isEmpty, let price = Price(parsing: entry[entry.index(after: equals)...]) else { return nil }
            prices[String(model)] = price
        }
        self.prices = prices
    }

    /// The price of `model`; a model `provider/name` also matches a price for `name`.
    public func price(of model: String) -> Price? {
        prices[model] ?? model.split(separator: "/").last.flatMap { prices[String($0)] }
    }

    /// The cost in USD of one call at `price`.
    public static func cost(_ price: Price, promptTokens: Int, completionTokens: Int) -> Double {
        (Double(promptTokens) * price.promptPerMillion + Double(completionTokens) * price.completionPerMillion)
            / 1_000_000
    }
}
