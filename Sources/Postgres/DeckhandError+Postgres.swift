import DeckhandCore

extension DeckhandError.Code {
    /// The server rejected a statement; the message carries the SQLSTATE and `underlying` a `PostgresServerError`.
    public static let postgresQuery: Self = "POSTGRES$QUERY"
    /// The server cancelled a statement that ran past `postgres.statement_timeout` (SQLSTATE 57014).
    public static let postgresStatementTimeout: Self = "POSTGRES$STATEMENT_TIMEOUT"
    /// No pooled connection became free within the acquire timeout.
    public static let postgresPoolTimeout: Self = "POSTGRES$POOL_TIMEOUT"
    /// A result cell could not be decoded as the requested type (NULL into a non-optional, wrong type, no column).
    public static let postgresDecode: Self = "POSTGRES$DECODE"
    /// The client was closed.
    public static let postgresClosed: Self = "POSTGRES$CLOSED"
    /// libpq failed in a way that is neither a server error nor a lost connection.
    public static let postgresClient: Self = "POSTGRES$CLIENT"
}

/// The details of an error reported by the PostgreSQL server, kept as the `underlying` of a `POSTGRES$QUERY` error.
public struct PostgresServerError: Error, Sendable, CustomStringConvertible {
    /// The five-character SQLSTATE (`23505` unique violation, `40001` serialization failure, …).
    public var sqlState: String
    /// The primary message.
    public var message: String
    /// The optional detail line.
    public var detail: String?
    /// The constraint involved, if any.
    public var constraint: String?

    public init(sqlState: String, message: String, detail: String? = nil, constraint: String? = nil) {
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.constraint = constraint
    }

    public var description: String {
        var text = "[\(sqlState)] \(message)"
        if let detail { text += " (\(detail))" }
        return text
    }
}

extension PostgresServerError: RedactedStringConvertible {
    /// The SQLSTATE, the message and the constraint: not the detail line, which quotes the failing row's values.
    public var redactedDescription: String {
        var text = "[\(sqlState)] \(message)"
        if let constraint { text += " (constraint \(constraint))" }
        return text
    }
}

extension DeckhandError {
    /// The SQLSTATE of a `POSTGRES$QUERY` error, nil for other errors.
    public var postgresSQLState: String? { (underlying as? PostgresServerError)?.sqlState }
}
