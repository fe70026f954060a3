import DeckhandCore

/// What every connection of a client sets up besides its URL. TCP keepalives (and libpq's
/// `tcp_user_timeout`), so that a connection to a server that vanished — a failover, a cut network — fails
/// within about twice `keepalivesIdle` instead of when the kernel gives up (hours), freeing the pool thread
/// that waits on it; and the server's limits on one statement and on a transaction left idle, so that a stuck
/// statement or a client that died inside a transaction does not hold its locks for good. Nil turns one off.
public struct PostgresSessionSettings: Sendable, Equatable {
    public var keepalivesIdle: Duration?
    public var statementTimeout: Duration?
    public var idleInTransactionTimeout: Duration?

    public init(
        keepalivesIdle: Duration? = .seconds(30),
        statementTimeout: Duration? = .seconds(60),
        idleInTransactionTimeout: Duration? = .seconds(60)
    ) {
        self.keepalivesIdle = keepalivesIdle
        self.statementTimeout = statementTimeout
        self.idleInTransactionTimeout = idleInTransactionTimeout
    }

    /// The `postgres.*` settings.
    public init(_ settings: PostgresSettings) {
        self.init(
            keepalivesIdle: settings.keepalivesIdle,
            statementTimeout: settings.statementTimeout,
            idleInTransactionTimeout: settings.idleInTransactionTimeout
        )
    }

    /// libpq connection keywords (they come after the URL, so they override what it says). Three probes a
    /// third of the idle time apart: a dead peer is noticed about 2 × `keepalivesIdle` after the last reply.
    var connectionKeywords: [(String, String)] {
        guard let idle = keepalivesIdle else { return [("keepalives", "0")] }
        let seconds = max(1, Self.seconds(idle))
        return [
            ("keepalives", "1"), ("keepalives_idle", "\(seconds)"), ("keepalives_interval", "\(max(1, seconds / 3))"),
            ("keepalives_count", "3"), ("tcp_user_timeout", "\(2 * seconds * 1000)"),
        ]
    }

    /// The `SET` statements of a new session (0 is PostgreSQL's "no limit"). The server probes its side of the
    /// connection the same way: a session whose client vanished (a partitioned or powered-off node) ends, and its
    /// locks and advisory locks go with it, instead of staying held until the server's kernel gives up (hours).
    var sessionStatements: String {
        let statement = statementTimeout.map(Self.milliseconds) ?? 0
        let idle = idleInTransactionTimeout.map(Self.milliseconds) ?? 0
        var statements = ["SET statement_timeout = \(statement)", "SET idle_in_transaction_session_timeout = \(idle)"]
        if let keepalivesIdle {
            let seconds = max(1, Self.seconds(keepalivesIdle))
            statements += [
                "SET tcp_keepalives_idle = \(seconds)", "SET tcp_keepalives_interval = \(max(1, seconds / 3))",
                "SET tcp_keepalives_count = 3", "SET tcp_user_timeout = \(2 * seconds * 1000)",
            ]
        }
        return statements.joined(separator: "; ")
    }

    static func seconds(_ duration: Duration) -> Int { Int(duration.components.seconds) }

    static func milliseconds(_ duration: Duration) -> Int {
        max(1, Int(duration.components.seconds) * 1000 + Int(duration.components.attoseconds / 1_000_000_000_000_000))
    }
}
