/// The one error type of Deckhand: a stable code, a human message, the error underneath, and where it was raised.
///
/// Codes are extensible (`DeckhandError.Code("AMQP$…")`) so each module adds its own without a central enum,
/// and the gateway maps them to HTTP statuses in one place. A message never contains a secret.
public struct DeckhandError: Error, CustomStringConvertible, Sendable {
    /// A stable, machine-readable error code such as `CONFIG$INVALID_VALUE`.
    public struct Code: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public init(stringLiteral value: String) { self.rawValue = value }
        public var description: String { rawValue }
    }

    public var code: Code
    public var message: String
    public var underlying: (any Error)?
    public var file: String
    public var line: Int

    public init(
        _ code: Code,
        _ message: String,
        underlying: (any Error)? = nil,
        file: String = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.file = file
        self.line = line
    }

    /// The code, the message and, of the error underneath, only what cannot quote data: its redacted form
    /// (``RedactedStringConvertible``), a nested `DeckhandError`'s own description, or else its type's name.
    /// What logs and users see.
    public var description: String {
        guard let underlying else { return "\(code): \(message)" }
        return "\(code): \(message) (\(Self.redacted(underlying)))"
    }

    /// Everything, the underlying error's full description included (a server's detail line may quote the
    /// failing row): for a debugger, never for a log.
    public var debugDescription: String {
        guard let underlying else { return "\(code): \(message) [\(file):\(line)]" }
        return "\(code): \(message) [\(file):\(line)] (\(String(reflecting: underlying)))"
    }

    static func redacted(_ error: any Error) -> String {
        switch error {
        case let error as DeckhandError: error.description
        case let error as any RedactedStringConvertible: error.redactedDescription
        default: String(describing: type(of: error))
        }
    }
}

extension DeckhandError: CustomDebugStringConvertible {}

/// An error whose full description may quote data (a row, a request, a reply) and that can also describe
/// itself without it: what a `DeckhandError` shows of it in logs and answers.
public protocol RedactedStringConvertible {
    var redactedDescription: String { get }
}

extension DeckhandError.Code {
    /// A configuration key has a value that cannot be used.
    public static let invalidConfiguration: Self = "CONFIG$INVALID_VALUE"
    /// A required dependency (broker, database, engine) cannot be reached.
    public static let unavailable: Self = "SERVICE$UNAVAILABLE"
    /// An operation did not finish before its deadline.
    public static let timeout: Self = "SERVICE$TIMEOUT"
    /// The operation was cancelled by its caller.
    public static let cancelled: Self = "SERVICE$CANCELLED"
    /// A peer answered with something we do not understand.
    public static let protocolViolation: Self = "SERVICE$PROTOCOL"
    /// A bug or an unexpected state: logged, never shown in detail to a user.
    public static let internalError: Self = "INTERNAL$ERROR"
}

extension JSONValue {
    /// The body of every error the HTTP API answers: `{"status":"error","code":…,"message":…}` (the gateway's
    /// own, and those the runtime workers reply to workspace requests with).
    public static func apiError(code: String, message: String) -> JSONValue {
        ["status": "error", "code": .string(code), "message": .string(message)]
    }
}
