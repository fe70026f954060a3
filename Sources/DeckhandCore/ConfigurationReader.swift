/// Reads configuration values from a `key = value` file and `DECKHAND_*` environment variables.
///
/// The file format is one `key = value` per line; `#` starts a comment; blank lines are ignored; values may be
/// wrapped in double quotes. The environment overrides the file: key `amqp.url` is read from
/// `DECKHAND_AMQP_URL`. Every typed getter fails with the key's name (and its environment variable) and what
/// was expected, so a bad value stops a program with a message an operator can act on.
public struct ConfigurationReader: Sendable {
    /// Where a value came from, for error messages.
    public enum Source: Sendable, Equatable {
        case file(String, line: Int)
        case environment(String)
    }

    private var values: [String: (value: String, source: Source)] = [:]

    /// Builds a reader from the contents of a configuration file and an environment.
    /// - Parameters:
    ///   - fileContents: the text of the configuration file, or `nil` when there is none.
    ///   - fileName: the file's name for error messages.
    ///   - environment: the process environment; `DECKHAND_*` variables are read, and Modal's own `MODAL_TOKEN_ID`,
    ///     `MODAL_TOKEN_SECRET`, `MODAL_ENVIRONMENT` and `MODAL_SERVER_URL` below everything else.
    public init(
        fileContents: String? = nil,
        fileName: String = "deckhand.conf",
        environment: [String: String] = [:]
    )
        throws(DeckhandError)
    {
        if let fileContents {
            var lineNumber = 0
            for rawLine in fileContents.split(separator: "\n", omittingEmptySubsequences: false) {
                lineNumber += 1
                var line = Substring(rawLine)
                if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
                let trimmed = line.trimmingWhitespace()
                if trimmed.isEmpty { continue }
                guard let equals = trimmed.firstIndex(of: "=") else {
                    throw DeckhandError(
                        .invalidConfiguration,
                        "\(fileName):\(lineNumber): expected `key = value`, got `\(trimmed)`"
                    )
                }
                let key = trimmed[..<equals].trimmingWhitespace()
                var value = trimmed[trimmed.index(after: equals)...].trimmingWhitespace()
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                    value = String(value.dropFirst().dropLast())
                }
                values[key] = (value, .file(fileName, line: lineNumber))
            }
        }
        for (name, value) in environment where name.hasPrefix("DECKHAND_") {
            let key = Self.key(forEnvironmentVariable: name)
            values[key] = (value, .environment(name))
        }
        // Modal's own variables (MODAL_TOKEN_ID, …) count where neither the file nor DECKHAND_* sets the key.
        for (name, key) in ModalSettings.modalVariables where values[key] == nil {
            if let value = environment[name], !value.isEmpty { values[key] = (value, .environment(name)) }
        }
    }

    /// The environment variable that overrides `key`: `amqp.publish_timeout` → `DECKHAND_AMQP_PUBLISH_TIMEOUT`.
    public static func environmentVariable(for key: String) -> String {
        "DECKHAND_" + key.uppercased().replacingDots()
    }

    /// Sections whose names hold an underscore themselves.
    static let underscoredSections = ["runtime_api"]

    static func key(forEnvironmentVariable name: String) -> String {
        let body = name.dropFirst("DECKHAND_".count).lowercased()
        // DECKHAND_RUNTIME_API_PORT → runtime_api.port (not runtime.api_port).
        for section in underscoredSections where body.hasPrefix(section + "_") {
            return section + "." + body.dropFirst(section.count + 1)
        }
        // The first underscore separates the section from the key: DECKHAND_AMQP_PUBLISH_TIMEOUT → amqp.publish_timeout.
        guard let underscore = body.firstIndex(of: "_") else { return body }
        return body[..<underscore] + "." + body[body.index(after: underscore)...]
    }

    /// The keys present in the file, for detecting misspelt keys.
    public var fileKeys: [String] {
        values.compactMap { key, entry in
            if case .file = entry.source { return key }
            return nil
        }.sorted()
    }

    /// The raw value of `key`, if set.
    public func raw(_ key: String) -> String? { values[key]?.value }

    func invalid(_ key: String, expected: String, got value: String) -> DeckhandError {
        let origin: String
        switch values[key]?.source {
        case .file(let name, let line): origin = " (\(name):\(line))"
        case .environment(let variable): origin = " (from \(variable))"
        case nil: origin = ""
        }
        return DeckhandError(.invalidConfiguration, "\(key)\(origin): expected \(expected), got `\(value)`")
    }

    /// A string value.
    public func string(_ key: String, default defaultValue: String) -> String {
        raw(key) ?? defaultValue
    }

    /// An optional string value; an empty value counts as unset.
    public func optionalString(_ key: String) -> String? {
        guard let value = raw(key), !value.isEmpty else { return nil }
        return value
    }

    /// An integer within `range`.
    public func int(
        _ key: String,
        default defaultValue: Int,
        range: ClosedRange<Int> = Int.min...Int.max
    )
        throws(DeckhandError) -> Int
    {
        guard let value = raw(key) else { return defaultValue }
        guard let parsed = Int(value), range.contains(parsed) else {
            throw invalid(key, expected: "an integer in \(range.lowerBound)...\(range.upperBound)", got: value)
        }
        return parsed
    }

    /// A boolean: `true|false|yes|no|on|off|1|0`.
    public func bool(_ key: String, default defaultValue: Bool) throws(DeckhandError) -> Bool {
        guard let value = raw(key) else { return defaultValue }
        switch value.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw invalid(key, expected: "true or false", got: value)
        }
    }

    /// A duration such as `250ms`, `10s`, `5m`, `1h`; a bare number means seconds.
    public func duration(
        _ key: String,
        default defaultValue: Duration,
        minimum: Duration = .zero
    )
        throws(DeckhandError) -> Duration
    {
        guard let value = raw(key) else { return defaultValue }
        guard let parsed = Self.parseDuration(value), parsed >= minimum else {
            throw invalid(key, expected: "a duration of at least \(minimum) such as 500ms, 10s or 5m", got: value)
        }
        return parsed
    }

    /// One of `choices`.
    public func choice(_ key: String, default defaultValue: String, choices: [String]) throws(DeckhandError) -> String {
        guard let value = raw(key) else { return defaultValue }
        guard choices.contains(value) else {
            throw invalid(key, expected: "one of \(choices.joined(separator: ", "))", got: value)
        }
        return value
    }

    /// Parses `250ms`, `10s`, `1.5s`, `5m`, `1h` or a bare number of seconds.
    public static func parseDuration(_ text: String) -> Duration? {
        let units: [(suffix: String, milliseconds: Double)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for unit in units where text.hasSuffix(unit.suffix) {
            guard let number = Double(text.dropLast(unit.suffix.count)), number >= 0, number.isFinite else {
                return nil
            }
            return .milliseconds(Int64((number * unit.milliseconds).rounded()))
        }
        guard let seconds = Double(text), seconds >= 0, seconds.isFinite else { return nil }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        guard let first = firstIndex(where: { !$0.isWhitespace }) else { return "" }
        let last = lastIndex(where: { !$0.isWhitespace })!
        return String(self[first...last])
    }

    func replacingDots() -> String {
        String(map { $0 == "." ? "_" : $0 })
    }
}
