import DeckhandCore
import Logging
import NIOPosix
import Synchronization

/// A pool of libpq connections whose blocking calls all run on a `NIOThreadPool` it owns, never on Swift's
/// cooperative pool. Each query, pipeline or whole transaction is one hop onto that thread pool.
///
/// Connections are opened lazily up to `poolSize`; callers beyond it wait in FIFO order for at most
/// `acquireTimeout` (then `POSTGRES$POOL_TIMEOUT`). An idle connection is checked before reuse and replaced when
/// the server has dropped it; a connection left broken (or inside a transaction) by a failed call is discarded.
public final class PostgresClient: Sendable {
    /// The URL with its password replaced by `***`, for logs.
    public var redactedURL: String { url.redacted }
    /// The most connections this client opens (not counting `listen` connections).
    public let poolSize: Int
    /// How long a call waits for a free connection.
    public let acquireTimeout: Duration
    /// How long opening one connection may take.
    public let connectTimeout: Duration
    /// Keepalives and server-side timeouts of every connection.
    public let session: PostgresSessionSettings

    let url: PostgresURL
    let logger: Logger
    private let pool: ConnectionPool
    private let threadPool: NIOThreadPool
    private let listeners = Mutex<[Int: PostgresListener]>([:])
    private let nextListenerID = Atomic<Int>(0)
    private let closed = Atomic<Bool>(false)

    /// A client for the database at `url` (`postgresql://user:password@host:port/database?options`).
    /// No connection is opened until the first call.
    public init(
        url: String,
        poolSize: Int = 8,
        acquireTimeout: Duration = .seconds(10),
        connectTimeout: Duration = .seconds(10),
        session: PostgresSessionSettings = PostgresSessionSettings(),
        logger: Logger = Logger(label: "deckhand.postgres")
    ) {
        self.url = PostgresURL(url)
        self.poolSize = max(1, poolSize)
        self.acquireTimeout = acquireTimeout
        self.connectTimeout = connectTimeout
        self.session = session
        var logger = logger
        logger[metadataKey: LogKey.component.rawValue] = "postgres"
        self.logger = logger
        self.pool = ConnectionPool(maximum: self.poolSize)
        self.threadPool = NIOThreadPool(numberOfThreads: self.poolSize)
        self.threadPool.start()
    }

    /// The pool as it stands: connections open (or opening), callers waiting for one, and how many
    /// acquisitions had to wait since the client was made (for `/metrics`).
    public var poolStatistics: (open: Int, waiting: Int, waits: Int) {
        (pool.openCount, pool.waitingCount, pool.waitCount)
    }

    /// A client configured by the `postgres.*` settings.
    public convenience init(settings: PostgresSettings, logger: Logger = Logger(label: "deckhand.postgres")) {
        self.init(
            url: settings.url,
            poolSize: settings.poolSize,
            acquireTimeout: settings.acquireTimeout,
            connectTimeout: settings.connectTimeout,
            session: PostgresSessionSettings(settings),
            logger: logger
        )
    }

    /// `url` with its password replaced by `***`, for logs and error messages.
    public static func redact(_ url: String) -> String { PostgresURL(url).redacted }

    // MARK: One hop

    /// Runs `body` with a pooled connection on the client's thread pool (one hop) and returns its result.
    /// The connection must not escape `body`. A transaction left open by `body` discards the connection.
    public func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws -> T
    ) async throws -> T {
        guard !closed.load(ordering: .relaxed) else { throw ConnectionPool.closedError() }
        let lease = try await pool.acquire(timeout: acquireTimeout)
        let ticket = LeaseTicket()
        do {
            return try await threadPool.runIfActive { [self] in
                guard ticket.claim() else { throw ConnectionPool.closedError() }
                return try self.run(lease, body)
            }
        } catch {
            guard ticket.claim() else { throw error }  // the body's own error
            // The hop never ran (cancelled, or the thread pool is shut down): the lease is still ours.
            pool.giveBack(lease)?.connection.close()
            if error is CancellationError {
                throw DeckhandError(.cancelled, "a PostgreSQL call was cancelled before it ran")
            }
            throw DeckhandError(.postgresClosed, "the PostgreSQL client is closed", underlying: error)
        }
    }

    /// Holds one pooled connection for the whole of `body`, which may await other work between its hops
    /// (``ReservedConnection/run(_:)``): for session state that must last as long as the work, such as a
    /// session advisory lock that the server releases by itself when this process dies. The connection goes
    /// back to the pool afterwards (or is discarded when `body` left it broken or inside a transaction).
    public func withReservedConnection<T: Sendable>(
        _ body: (ReservedConnection) async throws -> T
    ) async throws -> T {
        guard !closed.load(ordering: .relaxed) else { throw ConnectionPool.closedError() }
        let lease = try await pool.acquire(timeout: acquireTimeout)
        let ticket = LeaseTicket()
        let box: ConnectionBox
        do {
            box = try await threadPool.runIfActive { [self] in
                guard ticket.claim() else { throw ConnectionPool.closedError() }
                return try self.connect(lease)
            }
        } catch {
            guard ticket.claim() else { throw error }  // opening the connection failed: the slot is freed
            pool.giveBack(lease)?.connection.close()
            if error is CancellationError {
                throw DeckhandError(.cancelled, "a PostgreSQL call was cancelled before it ran")
            }
            throw DeckhandError(.postgresClosed, "the PostgreSQL client is closed", underlying: error)
        }
        let reserved = ReservedConnection(box: box, threadPool: threadPool)
        let result: Result<T, any Error>
        do {
            result = .success(try await body(reserved))
        } catch {
            result = .failure(error)
        }
        // Giving back may close the connection (a blocking libpq call): on the thread pool, or here if it is gone.
        do {
            try await threadPool.runIfActive { [self] in self.finish(box) }
        } catch {
            finish(box)
        }
        return try result.get()
    }

    /// Runs on a thread-pool thread: turns the lease into a good connection, runs `body`, gives it back.
    private func run<T>(_ lease: PoolLease, _ body: (PostgresConnection) throws -> T) throws -> T {
        let box = try connect(lease)
        defer { finish(box) }
        return try body(box.connection)
    }

    /// Runs on a thread-pool thread: turns the lease into a good connection.
    private func connect(_ lease: PoolLease) throws -> ConnectionBox {
        let box: ConnectionBox
        switch lease {
        case .idle(let idle):
            if idle.connection.checkIdleHealth() {
                box = idle
            } else {
                logger.notice(
                    "discarding a broken idle PostgreSQL connection",
                    metadata: [LogKey.postgresBackendPID.rawValue: "\(idle.connection.backendPID)"]
                )
                idle.connection.close()
                box = try openForSlot()
            }
        case .create:
            box = try openForSlot()
        }
        return box
    }

    /// Opens a connection in a slot the pool granted; frees the slot when that fails.
    private func openForSlot() throws -> ConnectionBox {
        do {
            let connection = try PostgresConnection.connect(
                url: url,
                connectTimeout: connectTimeout,
                session: session,
                logger: logger
            )
            logger.debug(
                "opened a PostgreSQL connection",
                metadata: [LogKey.postgresBackendPID.rawValue: "\(connection.backendPID)"]
            )
            return ConnectionBox(connection)
        } catch {
            pool.discard()
            logger.warning(
                "cannot open a PostgreSQL connection",
                metadata: [LogKey.error.rawValue: "\(error)", LogKey.errorCode.rawValue: "\(error.code)"]
            )
            throw error
        }
    }

    private func finish(_ box: ConnectionBox) {
        if box.connection.isReusable {
            pool.release(box)?.connection.close()
        } else {
            logger.notice(
                box.connection.isConnected
                    ? "discarding a PostgreSQL connection left inside a transaction or pipeline"
                    : "discarding a broken PostgreSQL connection",
                metadata: [LogKey.postgresBackendPID.rawValue: "\(box.connection.backendPID)"]
            )
            box.connection.close()
            pool.discard()
        }
    }

    // MARK: Queries

    /// Runs one parameterized statement (`$1`, `$2`, …) and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ bindings: [PostgresValue] = []) async throws -> [PostgresRow] {
        try await withConnection { try $0.query(sql, bindings) }
    }

    /// Runs one parameterized statement (`$1`, `$2`, …) and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ bindings: PostgresValue...) async throws -> [PostgresRow] {
        try await query(sql, bindings)
    }

    /// Runs one parameterized statement and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ bindings: [PostgresValue] = []) async throws -> Int {
        try await withConnection { try $0.execute(sql, bindings) }
    }

    /// Runs one parameterized statement and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ bindings: PostgresValue...) async throws -> Int {
        try await execute(sql, bindings)
    }

    /// Runs `sql` once per element of `rows` in pipeline mode, atomically, and returns the affected-row total.
    @discardableResult
    public func pipeline(_ sql: String, _ rows: [[PostgresValue]]) async throws -> Int {
        try await withConnection { try $0.pipeline(sql, rows) }
    }

    /// Runs `body` in one transaction in one hop: `BEGIN`, body, `COMMIT`; `ROLLBACK` and rethrow when it throws.
    public func transaction<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws -> T
    ) async throws -> T {
        try await withConnection { try $0.transaction(body) }
    }

    /// Holds the session advisory lock `key` (waiting for it on a pool thread) while `body` runs, in one hop.
    public func withAdvisoryLock<T: Sendable>(
        key: Int64,
        _ body: @escaping @Sendable (PostgresConnection) throws -> T
    ) async throws -> T {
        try await withConnection { try $0.withAdvisoryLock(key: key, body) }
    }

    // MARK: LISTEN / NOTIFY

    /// Sends `payload` on `channel` (`SELECT pg_notify($1, $2)`); delivered when the current transaction commits.
    public func notify(channel: String, payload: String = "") async throws {
        try await execute("SELECT pg_notify($1, $2)", [.text(channel), .text(payload)])
    }

    /// Listens on `channel` over a dedicated connection and OS thread; returns once `LISTEN` is in effect.
    ///
    /// The listener reconnects (and listens again) after a lost connection; notifications sent while it was
    /// disconnected are lost. It stops when the stream's consumer goes away or the client closes.
    public func listen(channel: String) async throws -> AsyncThrowingStream<PostgresNotification, any Error> {
        guard !closed.load(ordering: .relaxed) else { throw ConnectionPool.closedError() }
        let id = nextListenerID.wrappingAdd(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncThrowingStream<PostgresNotification, any Error>.makeStream(
            bufferingPolicy: .bufferingNewest(10_000)
        )
        let listener = try PostgresListener(
            channel: channel,
            url: url,
            connectTimeout: connectTimeout,
            session: session,
            continuation: continuation,
            logger: logger
        )
        continuation.onTermination = { [weak self] _ in
            listener.stop()
            _ = self?.listeners.withLock { $0.removeValue(forKey: id) }
        }
        listeners.withLock { $0[id] = listener }
        try await listener.start()
        return stream
    }

    // MARK: Shutdown

    /// Closes idle connections, stops listeners, fails waiters, and shuts down the thread pool once calls in
    /// flight have finished (their connections are closed as they come back).
    public func close() async {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        let running = listeners.withLock { listeners in
            defer { listeners = [:] }
            return Array(listeners.values)
        }
        for listener in running { listener.stop() }
        let idle = pool.close()
        for box in idle { box.connection.close() }
        do {
            try await threadPool.shutdownGracefully()
        } catch {
            logger.warning("cannot shut down the PostgreSQL thread pool", metadata: [LogKey.error.rawValue: "\(error)"])
        }
        logger.debug("closed the PostgreSQL client")
    }
}

/// A pooled connection held by one task across hops (``PostgresClient/withReservedConnection(_:)``).
public final class ReservedConnection: Sendable {
    private let box: ConnectionBox
    private let threadPool: NIOThreadPool

    init(box: ConnectionBox, threadPool: NIOThreadPool) {
        self.box = box
        self.threadPool = threadPool
    }

    /// Runs `body` with the connection on the client's thread pool. The owning task calls this one hop at a
    /// time (never concurrently), which is what makes sharing the connection between hops safe.
    public func run<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        let box = self.box
        return try await threadPool.runIfActive { try body(box.connection) }
    }
}

/// Marks whether a lease was taken over by its hop, so that exactly one side gives it back.
private final class LeaseTicket: Sendable {
    private let taken = Atomic<Bool>(false)
    func claim() -> Bool { !taken.exchange(true, ordering: .acquiringAndReleasing) }
}

extension PostgresConnection {
    /// Runs `body` between `BEGIN` and `COMMIT` on this connection; `ROLLBACK` and rethrow when it throws.
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try simpleQuery("BEGIN")
        let result: T
        do {
            result = try body(self)
        } catch {
            if isConnected { try? simpleQuery("ROLLBACK") }
            throw error
        }
        do {
            try simpleQuery("COMMIT")
        } catch {
            if isConnected, isInTransaction { try? simpleQuery("ROLLBACK") }
            throw error
        }
        return result
    }
}
