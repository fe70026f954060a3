import CLibPQ
import DeckhandCore
import DeckhandPOSIX
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One libpq connection, used synchronously inside a hop onto the client's thread pool.
///
/// Handed to the closures of `PostgresClient.withConnection`, `transaction` and `withAdvisoryLock`; it must not
/// escape them. Every method blocks the calling thread, which is always one of the pool's own threads.
/// Statements are prepared once per connection and cached by SQL text and parameter types.
public final class PostgresConnection {
    let handle: OpaquePointer
    let url: PostgresURL
    let session: PostgresSessionSettings
    let logger: Logger
    private var statements: [String: String] = [:]
    private var nextStatementNumber = 0
    private var closed = false
    /// The server turned out not to take writes (a standby, or a primary being failed over): the connection is
    /// not given back to the pool, so the next one finds the new primary.
    private var condemned = false

    /// The most prepared statements kept per connection; past it the cache is dropped (`DEALLOCATE ALL`).
    static let statementCacheLimit = 512
    /// How many statements a pipeline sends before it syncs and reads their results.
    static let pipelineBatch = 1000

    private init(handle: OpaquePointer, url: PostgresURL, session: PostgresSessionSettings, logger: Logger) {
        self.handle = handle
        self.backendPID = PQbackendPID(handle)
        self.url = url
        self.session = session
        self.logger = logger
    }

    deinit {
        if !closed { PQfinish(handle) }
    }

    /// Opens a connection (blocking) and sets the session to UTC and ISO dates, which row decoding expects, and
    /// to `session`'s keepalives and timeouts.
    static func connect(
        url: PostgresURL,
        connectTimeout: Duration,
        session: PostgresSessionSettings,
        logger: Logger
    ) throws(DeckhandError) -> PostgresConnection {
        let seconds = max(
            2,
            Int(connectTimeout.components.seconds) + (connectTimeout.components.attoseconds > 0 ? 1 : 0)
        )
        var keywords = ["dbname", "connect_timeout", "fallback_application_name"] + session.connectionKeywords.map(\.0)
        var values = [url.raw, String(seconds), "deckhand"] + session.connectionKeywords.map(\.1)
        // Several hosts (a primary and its standbys): only the one that takes writes will do, unless the URL says.
        if url.hostCount > 1, !url.raw.contains("target_session_attrs") {
            keywords.append("target_session_attrs")
            values.append("read-write")
        }
        let handle: OpaquePointer? = withConstCStringArray(keywords) { keywordPointers in
            withConstCStringArray(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let handle else {
            throw DeckhandError(.unavailable, "cannot allocate a PostgreSQL connection to \(url.redacted)")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = url.scrub(Self.errorMessage(handle))
            PQfinish(handle)
            throw DeckhandError(.unavailable, "cannot connect to PostgreSQL at \(url.redacted): \(message)")
        }
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
        let connection = PostgresConnection(handle: handle, url: url, session: session, logger: logger)
        try connection.simpleQuery("SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, MDY'; \(session.sessionStatements)")
        return connection
    }

    /// Closes the connection (idempotent).
    func close() {
        guard !closed else { return }
        closed = true
        PQfinish(handle)
    }

    /// The server process serving this connection (`pg_backend_pid()`), as of when it was opened.
    public let backendPID: Int32

    /// Whether libpq still considers the connection good.
    var isConnected: Bool { !closed && PQstatus(handle) == CONNECTION_OK }

    /// Whether the connection can go back to the pool: connected, no transaction open, not in pipeline mode.
    var isReusable: Bool {
        isConnected && !condemned && PQtransactionStatus(handle) == PQTRANS_IDLE
            && PQpipelineStatus(handle) == PQ_PIPELINE_OFF
    }

    /// Whether a transaction block is open (or failed and not yet ended).
    public var isInTransaction: Bool {
        let status = PQtransactionStatus(handle)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR
    }

    /// A cheap check before reuse: if the socket is readable while idle, read what is there (a server that
    /// terminated this backend has sent an error and closed), then report whether the connection is still good.
    func checkIdleHealth() -> Bool {
        guard isConnected else { return false }
        let socket = PQsocket(handle)
        guard socket >= 0 else { return false }
        // A killed backend leaves an error message and then end-of-file: one read takes the message, the next
        // sees the end. Keep reading while the socket stays readable (bounded, in case a peer keeps talking).
        for _ in 0..<8 {
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, 0)
            if ready < 0 { return false }
            if ready == 0 { break }
            if PQconsumeInput(handle) == 0 { return false }
            while let notification = PQnotifies(handle) { PQfreemem(notification) }
            if PQstatus(handle) != CONNECTION_OK { return false }
        }
        return PQstatus(handle) == CONNECTION_OK
    }

    // MARK: Queries

    /// Runs one parameterized statement (`$1`, `$2`, …) and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ bindings: [PostgresValue] = []) throws(DeckhandError) -> [PostgresRow] {
        let result = try runPrepared(sql, bindings)
        defer { PQclear(result) }
        return Self.rows(of: result)
    }

    /// Runs one parameterized statement (`$1`, `$2`, …) and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ bindings: PostgresValue...) throws(DeckhandError) -> [PostgresRow] {
        try query(sql, bindings)
    }

    /// Runs one parameterized statement and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ bindings: [PostgresValue] = []) throws(DeckhandError) -> Int {
        let result = try runPrepared(sql, bindings)
        defer { PQclear(result) }
        return Self.affectedRows(of: result)
    }

    /// Runs one parameterized statement and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ bindings: PostgresValue...) throws(DeckhandError) -> Int {
        try execute(sql, bindings)
    }

    /// Runs a fixed, possibly multi-statement SQL text with the simple protocol (`PQexec`), e.g. a migration file.
    /// Never build this text from input: it takes no parameters.
    public func simpleQuery(_ sql: String) throws(DeckhandError) {
        let result = PQexec(handle, sql)
        defer { if let result { PQclear(result) } }
        try check(result)
    }

    /// Runs `sql` once per element of `rows` in libpq pipeline mode (few round trips) and returns the total of
    /// affected rows. Atomic: outside a transaction it opens one and commits at the end; inside one it joins it.
    @discardableResult
    public func pipeline(_ sql: String, _ rows: [[PostgresValue]]) throws(DeckhandError) -> Int {
        guard !rows.isEmpty else { return 0 }
        // Prepare every parameter-type signature first: preparing is a round trip of its own.
        var names: [String] = []
        names.reserveCapacity(rows.count)
        for row in rows { names.append(try statementName(sql, row)) }
        let ownTransaction = !isInTransaction
        if ownTransaction { try simpleQuery("BEGIN") }
        var firstError: DeckhandError?
        var affected = 0
        guard PQenterPipelineMode(handle) == 1 else {
            if ownTransaction { try? simpleQuery("ROLLBACK") }
            throw connectionError("cannot enter pipeline mode")
        }
        var start = 0
        batches: while start < rows.count {
            let end = min(start + Self.pipelineBatch, rows.count)
            for index in start..<end {
                let sent = Self.withParameters(rows[index]) { count, values, lengths, formats in
                    PQsendQueryPrepared(handle, names[index], count, values, lengths, formats, 0)
                }
                if sent == 0 {
                    firstError = connectionError("cannot send a pipelined statement")
                    break batches
                }
            }
            guard PQpipelineSync(handle) == 1 else {
                firstError = connectionError("cannot sync the pipeline")
                break
            }
            var consecutiveNils = 0
            while true {
                guard let result = PQgetResult(handle) else {
                    consecutiveNils += 1
                    if consecutiveNils > 1 || !isConnected {
                        firstError = firstError ?? connectionError("pipeline ended without a sync")
                        break batches
                    }
                    continue
                }
                consecutiveNils = 0
                let status = PQresultStatus(result)
                if status == PGRES_PIPELINE_SYNC {
                    PQclear(result)
                    break
                }
                if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK {
                    affected += Self.affectedRows(of: result)
                } else if status != PGRES_PIPELINE_ABORTED, firstError == nil {
                    do throws(DeckhandError) {
                        try check(result)
                    } catch {
                        firstError = error
                    }
                }
                PQclear(result)
            }
            if firstError != nil { break }
            start = end
        }
        if isConnected, PQexitPipelineMode(handle) != 1 {
            firstError = firstError ?? connectionError("cannot leave pipeline mode")
        }
        if let firstError {
            if ownTransaction, isConnected { try? simpleQuery("ROLLBACK") }
            throw firstError
        }
        if ownTransaction { try simpleQuery("COMMIT") }
        return affected
    }

    // MARK: Advisory locks

    /// Takes the session advisory lock `key` (waiting for it as long as it takes), runs `body` (without the
    /// session's statement and idle-transaction limits: a migration may be long), and releases the lock.
    public func withAdvisoryLock<T>(key: Int64, _ body: (PostgresConnection) throws -> T) throws -> T {
        try simpleQuery("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        defer {
            do {
                try simpleQuery(session.sessionStatements)
            } catch {
                logger.warning("cannot restore the session's timeouts", metadata: [LogKey.error.rawValue: "\(error)"])
            }
        }
        try execute("SELECT pg_advisory_lock($1)", [.int(key)])
        defer {
            do {
                try execute("SELECT pg_advisory_unlock($1)", [.int(key)])
            } catch {
                logger.warning(
                    "cannot release an advisory lock",
                    metadata: [LogKey.error.rawValue: "\(error)"]
                )
            }
        }
        return try body(self)
    }

    /// Tries to take the transaction advisory lock `key` without waiting; it is released at the end of the
    /// current transaction. Use inside `PostgresClient.transaction`.
    public func tryAdvisoryTransactionLock(key: Int64) throws -> Bool {
        try query("SELECT pg_try_advisory_xact_lock($1) AS locked", [.int(key)]).first?.decode(Bool.self, "locked")
            ?? false
    }

    // MARK: Internals

    private func runPrepared(_ sql: String, _ bindings: [PostgresValue]) throws(DeckhandError) -> OpaquePointer {
        var retried = false
        while true {
            let name = try statementName(sql, bindings)
            let result = Self.withParameters(bindings) { count, values, lengths, formats in
                PQexecPrepared(handle, name, count, values, lengths, formats, 0)
            }
            do throws(DeckhandError) {
                try check(result)
                return result!
            } catch {
                if let result { PQclear(result) }
                // A cached statement went stale (schema change, DISCARD ALL): forget it and, when no transaction
                // is in the way, prepare it again once.
                let state = error.postgresSQLState
                if state == "26000" || state == "0A000" {
                    forgetStatements()
                    if !retried, !isInTransaction {
                        retried = true
                        continue
                    }
                }
                throw error
            }
        }
    }

    private func statementName(_ sql: String, _ bindings: [PostgresValue]) throws(DeckhandError) -> String {
        var key = sql
        key.append("\u{0}")
        for binding in bindings {
            key.append(String(binding.typeOID))
            key.append(",")
        }
        if let name = statements[key] { return name }
        if statements.count >= Self.statementCacheLimit {
            forgetStatements()
        }
        nextStatementNumber += 1
        let name = "deckhand_\(nextStatementNumber)"
        let types = bindings.map { Oid($0.typeOID) }
        let result = types.withUnsafeBufferPointer { buffer in
            PQprepare(handle, name, sql, Int32(bindings.count), buffer.baseAddress)
        }
        defer { if let result { PQclear(result) } }
        try check(result)
        statements[key] = name
        return name
    }

    private func forgetStatements() {
        statements.removeAll()
        if !isInTransaction || PQtransactionStatus(handle) == PQTRANS_INTRANS {
            let result = PQexec(handle, "DEALLOCATE ALL")
            if let result { PQclear(result) }
        }
    }

    /// Throws the right `DeckhandError` unless `result` is a success.
    private func check(_ result: OpaquePointer?) throws(DeckhandError) {
        guard let result else { throw connectionError("no result from the server") }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_SINGLE_TUPLE, PGRES_PIPELINE_SYNC:
            return
        default:
            if !isConnected {
                throw connectionError(String(cString: PQresultErrorMessage(result)))
            }
            let server = PostgresServerError(
                sqlState: Self.field(result, "C") ?? "XX000",
                message: url.scrub(Self.field(result, "M") ?? String(cString: PQresultErrorMessage(result))),
                detail: Self.field(result, "D").map(url.scrub),
                constraint: Self.field(result, "n")
            )
            // A server that does not take writes (25006: a standby, or a primary demoted by a failover) or is
            // shutting down (57P01-57P03): this connection is done; the work is retried on another.
            if server.sqlState == "25006" || server.sqlState.hasPrefix("57P") {
                condemned = true
                throw DeckhandError(
                    .unavailable,
                    "the PostgreSQL server cannot take this work now (SQLSTATE \(server.sqlState): \(server.message)); "
                        + "the connection is dropped and the work retried",
                    underlying: server
                )
            }
            // 57014 is a cancelled statement: by postgres.statement_timeout here (nothing else cancels ours).
            throw DeckhandError(
                server.sqlState == "57014" ? .postgresStatementTimeout : .postgresQuery,
                "statement failed with SQLSTATE \(server.sqlState): \(server.message)",
                underlying: server
            )
        }
    }

    private func connectionError(_ context: String) -> DeckhandError {
        let detail = url.scrub(Self.errorMessage(handle))
        return DeckhandError(
            isConnected ? .postgresClient : .unavailable,
            "\(context.trimmingCharacters(in: .whitespacesAndNewlines))"
                + (detail.isEmpty ? "" : ": \(detail)")
        )
    }

    private static func errorMessage(_ handle: OpaquePointer) -> String {
        guard let message = PQerrorMessage(handle) else { return "" }
        return String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func field(_ result: OpaquePointer, _ code: Character) -> String? {
        guard let value = PQresultErrorField(result, Int32(code.asciiValue!)) else { return nil }
        return String(cString: value)
    }

    static func rows(of result: OpaquePointer) -> [PostgresRow] {
        let rowCount = Int(PQntuples(result))
        let columnCount = PQnfields(result)
        guard columnCount > 0 else { return [] }
        var names: [String] = []
        var types: [UInt32] = []
        for column in 0..<columnCount {
            names.append(String(cString: PQfname(result, column)))
            types.append(UInt32(PQftype(result, column)))
        }
        let columns = PostgresColumns(names: names, types: types)
        var rows: [PostgresRow] = []
        rows.reserveCapacity(rowCount)
        for row in 0..<Int32(rowCount) {
            var values: [String?] = []
            values.reserveCapacity(Int(columnCount))
            for column in 0..<columnCount {
                if PQgetisnull(result, row, column) == 1 {
                    values.append(nil)
                } else {
                    let length = Int(PQgetlength(result, row, column))
                    let pointer = UnsafeRawPointer(PQgetvalue(result, row, column)!)
                    values.append(
                        String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
                    )
                }
            }
            rows.append(PostgresRow(columns: columns, values: values))
        }
        return rows
    }

    static func affectedRows(of result: OpaquePointer) -> Int {
        guard let text = PQcmdTuples(result) else { return 0 }
        return Int(String(cString: text)) ?? 0
    }

    /// Calls `body` with libpq's parameter arrays (values NUL-terminated, lengths, formats), valid during the call.
    static func withParameters<R>(
        _ bindings: [PostgresValue],
        _ body: (
            Int32, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?
        ) -> R
    ) -> R {
        var buffers: [UnsafeMutablePointer<CChar>?] = []
        var lengths: [Int32] = []
        var formats: [Int32] = []
        buffers.reserveCapacity(bindings.count)
        lengths.reserveCapacity(bindings.count)
        formats.reserveCapacity(bindings.count)
        for binding in bindings {
            formats.append(binding.format)
            guard let bytes = binding.wireBytes else {
                buffers.append(nil)
                lengths.append(0)
                continue
            }
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
            bytes.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(buffer).copyMemory(
                    from: raw.baseAddress ?? UnsafeRawPointer(buffer),
                    byteCount: raw.count
                )
            }
            buffer[bytes.count] = 0
            buffers.append(buffer)
            lengths.append(Int32(bytes.count))
        }
        defer { for buffer in buffers { buffer?.deallocate() } }
        let values = buffers.map { UnsafePointer($0) }
        return values.withUnsafeBufferPointer { valuePointers in
            lengths.withUnsafeBufferPointer { lengthPointers in
                formats.withUnsafeBufferPointer { formatPointers in
                    body(
                        Int32(bindings.count),
                        valuePointers.baseAddress,
                        lengthPointers.baseAddress,
                        formatPointers.baseAddress
                    )
                }
            }
        }
    }
}
