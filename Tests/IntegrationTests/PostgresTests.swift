import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Postgres
import Synchronization
import Testing

@Suite struct PostgresTests {
    @Test func everyTypeRoundTripsIncludingNull() async throws {
        try await TestPostgres.withSchema { client in
            try await client.execute(
                """
                CREATE TABLE samples (
                    s varchar(20), i bigint, small integer, b boolean, d double precision, u uuid,
                    t timestamptz, j jsonb, bin bytea, mood text
                )
                """
            )
            let id = UUID()
            let date = Date(timeIntervalSince1970: 1_795_840_514.123456)
            let bytes: [UInt8] = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x5C, 0x78]
            try await client.execute(
                "INSERT INTO samples VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                [
                    .text("héllo 'q'"), .int(Int64.max), .int(-12), .bool(true), .double(-0.125), .uuid(id),
                    .timestamptz(date), .jsonb(#"{"k": [1, "two"]}"#), .bytea(bytes), .text("ok"),
                ]
            )
            try await client.execute(
                "INSERT INTO samples VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                Array(repeating: PostgresValue.null, count: 10)
            )
            let rows = try await client.query("SELECT * FROM samples ORDER BY s NULLS LAST")
            #expect(rows.count == 2)
            let row = rows[0]
            #expect(try row.decode(String.self, "s") == "héllo 'q'")
            #expect(try row.decode(Int64.self, "i") == Int64.max)
            #expect(try row.decode(Int32.self, "small") == -12)
            #expect(try row.decode(Int.self, "small") == -12)
            #expect(try row.decode(Bool.self, "b") == true)
            #expect(try row.decode(Double.self, "d") == -0.125)
            #expect(try row.decode(UUID.self, "u") == id)
            let stored = try row.decode(Date.self, "t")
            #expect(abs(stored.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000_002)
            struct Doc: Decodable, Equatable {
                var k: [Value]
                enum Value: Decodable, Equatable {
                    case int(Int)
                    case string(String)
                    init(from decoder: any Decoder) throws {
                        let container = try decoder.singleValueContainer()
                        if let int = try? container.decode(Int.self) {
                            self = .int(int)
                        } else {
                            self = .string(try container.decode(String.self))
                        }
                    }
                }
            }
            #expect(try row.decodeJSON(Doc.self, "j") == Doc(k: [.int(1), .string("two")]))
            #expect(try row.decode(String.self, "j") == #"{"k": [1, "two"]}"#)
            #expect(try row.decode([UInt8].self, "bin") == bytes)
            #expect(try row.decode(Data.self, "bin") == Data(bytes))
            let empty = rows[1]
            for column in empty.columns.names {
                #expect(try empty.decode(String?.self, column) == nil)
            }
            #expect(try empty.decode(Int?.self, "i") == nil)
            #expect(try empty.decode(Date?.self, "t") == nil)
            #expect(try empty.decode([UInt8]?.self, "bin") == nil)
            do {
                _ = try empty.decode(Int.self, "i")
                Issue.record("NULL decoded into Int")
            } catch let error as DeckhandError {
                #expect(error.code == .postgresDecode)
                #expect(error.message.contains("\"i\""))
            }
        }
    }

    @Test func serverErrorsCarryTheSQLState() async throws {
        try await TestPostgres.withSchema { client in
            try await client.execute("CREATE TABLE uniq (id bigint PRIMARY KEY)")
            try await client.execute("INSERT INTO uniq VALUES ($1)", 1)
            do {
                try await client.execute("INSERT INTO uniq VALUES ($1)", 1)
                Issue.record("duplicate key accepted")
            } catch let error as DeckhandError {
                #expect(error.code == .postgresQuery)
                #expect(error.postgresSQLState == "23505")
                #expect(error.message.contains("23505"))
            }
            // The connection is still usable afterwards.
            #expect(try await client.query("SELECT count(*) AS n FROM uniq")[0].decode(Int.self, "n") == 1)
        }
    }

    @Test func connectionFailureIsUnavailableWithoutThePassword() async throws {
        let client = PostgresClient(
            url: "postgresql://deckhand:topsecretpw@127.0.0.1:1/deckhand",
            poolSize: 1,
            connectTimeout: .seconds(2)
        )
        do {
            try await client.query("SELECT 1")
            Issue.record("connected to a closed port")
        } catch let error as DeckhandError {
            #expect(error.code == .unavailable)
            #expect(!error.description.contains("topsecretpw"))
        }
        await client.close()
    }

    /// A URL of several hosts (a primary and its standbys): libpq tries them in turn, and Deckhand asks for the
    /// one that takes writes. A refused first host is passed over.
    @Test func aURLOfSeveralHostsConnectsToOneThatAnswers() async throws {
        try await TestPostgres.withSchemaURL { url in
            guard let at = url.range(of: "@127.0.0.1:") else {
                throw DeckhandError(.invalidConfiguration, "the test database URL is not on 127.0.0.1: \(url)")
            }
            let several = url.replacingCharacters(in: at, with: "@127.0.0.1:1,127.0.0.1:")
            let client = PostgresClient(url: several, poolSize: 1, connectTimeout: .seconds(2))
            let readOnly = try await client.query("SHOW transaction_read_only")[0].decode(
                String.self,
                "transaction_read_only"
            )
            #expect(readOnly == "off")
            await client.close()
        }
    }

    /// A connection whose server stops taking writes (a standby, a primary demoted by a failover: SQLSTATE
    /// 25006) fails with a retryable error and is not given back to the pool: the next statement gets a new
    /// connection, which finds the server that takes writes.
    @Test func aConnectionToAServerThatTakesNoWritesIsDropped() async throws {
        try await TestPostgres.withSchema(poolSize: 1) { client in
            try await client.execute("CREATE TABLE notes (text text)")
            let before = try await client.query("SELECT pg_backend_pid() AS pid")[0].decode(Int32.self, "pid")
            // This session now behaves as a standby's would.
            try await client.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            let refused = await #expect(throws: DeckhandError.self) {
                try await client.execute("INSERT INTO notes VALUES ('refused')")
            }
            #expect(refused?.code == .unavailable, "retryable: \(String(describing: refused))")
            #expect(refused?.postgresSQLState == "25006")
            try await client.execute("INSERT INTO notes VALUES ('kept')")
            let after = try await client.query("SELECT pg_backend_pid() AS pid")[0].decode(Int32.self, "pid")
            #expect(after != before, "a new connection")
            #expect(
                try await client.query("SELECT text FROM notes").map { try $0.decode(String.self, "text") } == ["kept"]
            )
        }
    }

    @Test func poolOfFourServesSixtyFourConcurrentTasks() async throws {
        try await TestPostgres.withSchema(poolSize: 4) { client in
            let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
                for _ in 0..<64 {
                    group.addTask {
                        try await client.query("SELECT pg_backend_pid() AS pid, pg_sleep(0.01)")[0]
                            .decode(Int32.self, "pid")
                    }
                }
                var pids: [Int32] = []
                for try await pid in group { pids.append(pid) }
                return pids
            }
            #expect(pids.count == 64)
            #expect(Set(pids).count <= 4)
            #expect(Set(pids).count >= 1)
        }
    }

    @Test func transactionRollsBackWhenTheBodyThrows() async throws {
        struct Boom: Error {}
        try await TestPostgres.withSchema { client in
            try await client.execute("CREATE TABLE notes (body text)")
            await #expect(throws: Boom.self) {
                try await client.transaction { connection in
                    try connection.execute("INSERT INTO notes VALUES ($1)", "lost")
                    throw Boom()
                }
            }
            let kept = try await client.transaction { connection in
                try connection.execute("INSERT INTO notes VALUES ($1)", "kept")
            }
            #expect(kept == 1)
            let bodies = try await client.query("SELECT body FROM notes").map { try $0.decode(String.self, 0) }
            #expect(bodies == ["kept"])
        }
    }

    @Test func migrationsRunOnceAndCreateTheTables() async throws {
        try await TestPostgres.withSchema { client in
            let all = try DeckhandSchema.migrations
            #expect(all.first?.version == 1)
            let first = try await DeckhandSchema.migrate(client)
            #expect(first.map(\.version) == all.map(\.version))
            let second = try await DeckhandSchema.migrate(client)
            #expect(second.isEmpty)
            let tables = try await client.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ).map { try $0.decode(String.self, 0) }
            for table in [
                "users", "api_keys", "conversations", "events", "llm_calls", "sandboxes", "schema_migrations",
            ] {
                #expect(tables.contains(table), "missing table \(table)")
            }
            let recorded = try await client.query("SELECT count(*) FROM schema_migrations")[0].decode(Int.self, 0)
            #expect(recorded == all.count)
            // The status CHECK is in force.
            await #expect(throws: DeckhandError.self) {
                try await client.execute(
                    "INSERT INTO sandboxes (id, backend, image, status) VALUES ($1, 'process', 'img', 'bogus')",
                    [.uuid(UUID())]
                )
            }
        }
    }

    /// The migration lock is one for the whole database, and every process migrates as it starts: a schema that
    /// is up to date is seen so without the lock (a start never queues behind another schema's migrations), while
    /// one with a migration missing waits for the lock and then applies it.
    @Test func anUpToDateSchemaMigratesWithoutWaitingForTheLock() async throws {
        var session = PostgresSessionSettings()
        session.statementTimeout = .seconds(30)
        try await TestPostgres.withSchema(session: session) { client in
            try await DeckhandSchema.migrate(client)
            let probe = PostgresMigration(version: 1_000_000, name: "probe", sql: "CREATE TABLE probe (id int)")
            let withProbe = try PostgresMigrator(migrations: try DeckhandSchema.migrations + [probe])
            let holder = PostgresClient(url: TestEnvironment.postgresURL, poolSize: 1)
            let key = PostgresMigrator.defaultLockKey
            let applied = try await holder.withReservedConnection { lock in
                _ = try await lock.run { try $0.execute("SELECT pg_advisory_lock($1)", [.int(key)]) }
                // Held by another session: an up-to-date schema returns, with nothing done (had it waited for the
                // lock, the statement timeout would end the wait with an error).
                #expect(try await DeckhandSchema.migrate(client).isEmpty)
                // A schema with a migration missing waits for the lock, and applies it once the lock is free.
                let migrating = Task { try await withProbe.migrate(client) }
                try await eventually("a migration waiting for the lock") {
                    try await lock.run {
                        try $0.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")[0]
                            .decode(Int.self, 0) >= 1
                    }
                }
                _ = try await lock.run { try $0.execute("SELECT pg_advisory_unlock($1)", [.int(key)]) }
                return try await migrating.value
            }
            await holder.close()
            #expect(applied == [probe])
        }
    }

    @Test func killedIdleConnectionsAreReplaced() async throws {
        try await TestPostgres.withSchema(poolSize: 2) { client in
            // Open both connections.
            let before = try await withThrowingTaskGroup(of: Int32.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        try await client.query("SELECT pg_backend_pid(), pg_sleep(0.2)")[0].decode(Int32.self, 0)
                    }
                }
                return try await group.reduce(into: Set<Int32>()) { $0.insert($1) }
            }
            #expect(before.count == 2)
            let killer = PostgresClient(url: TestEnvironment.postgresURL, poolSize: 1)
            for pid in before {
                let killed = try await killer.query("SELECT pg_terminate_backend($1::int)", [.int(Int64(pid))])
                #expect(try killed[0].decode(Bool.self, 0))
            }
            await killer.close()
            try await Task.sleep(for: .milliseconds(200))
            let after = try await withThrowingTaskGroup(of: Int32.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        try await client.query("SELECT pg_backend_pid(), pg_sleep(0.05)")[0].decode(Int32.self, 0)
                    }
                }
                return try await group.reduce(into: Set<Int32>()) { $0.insert($1) }
            }
            #expect(after.count == 2)
            #expect(after.isDisjoint(with: before))
        }
    }

    @Test func acquireTimeoutFiresWhenAllConnectionsAreHeld() async throws {
        try await TestPostgres.withSchema(poolSize: 1, acquireTimeout: .milliseconds(200)) { client in
            // The holder keeps the only connection until it is told to let go: no window for it to end early,
            // however loaded the machine (a 4 s pg_sleep once ended before a loaded CI machine saw it run).
            let (holding, heldNow) = AsyncStream<Void>.makeStream()
            let (released, release) = AsyncStream<Void>.makeStream()
            let holder = Task {
                defer { heldNow.finish() }  // a holder that failed to acquire ends the wait below too
                try await client.withReservedConnection { _ in
                    heldNow.yield()
                    for await _ in released {}
                }
            }
            for await _ in holding { break }
            let start = ContinuousClock.now
            do {
                try await client.query("SELECT 1")
                Issue.record("acquired a connection while the only one was held")
            } catch let error as DeckhandError {
                #expect(error.code == .postgresPoolTimeout)
                #expect(error.message.contains("timeout"))
            }
            #expect(ContinuousClock.now - start < .seconds(3), "it timed out rather than waiting for the holder")
            release.finish()
            try await holder.value
            // The pool works again once the connection is back.
            #expect(try await client.query("SELECT 1")[0].decode(Int.self, 0) == 1)
        }
    }

    @Test func theServerEndsALongStatementAndAnIdleTransaction() async throws {
        let session = PostgresSessionSettings(
            statementTimeout: .milliseconds(300),
            idleInTransactionTimeout: .milliseconds(300)
        )
        // A client without the limits, to hold what the tested one waits for and to watch the server.
        let holder = PostgresClient(
            url: TestEnvironment.postgresURL,
            poolSize: 1,
            session: PostgresSessionSettings(statementTimeout: nil, idleInTransactionTimeout: nil)
        )
        defer { Task { await holder.close() } }
        try await TestPostgres.withSchema(poolSize: 1, session: session) { client in
            #expect(try await client.query("SHOW statement_timeout")[0].decode(String.self, 0) == "300ms")
            // The server probes its side of the TCP connection (the test's URL is TCP): a vanished client's
            // session ends with its locks.
            #expect(try await client.query("SHOW tcp_keepalives_idle")[0].decode(String.self, 0) == "30")
            #expect(try await client.query("SHOW tcp_user_timeout")[0].decode(String.self, 0) == "60000")
            // A statement that would wait for good (for a lock the holder keeps) is cancelled by the server.
            let key = Int64.random(in: 1...Int64.max)
            let long = try await holder.withReservedConnection { held in
                _ = try await held.run { try $0.execute("SELECT pg_advisory_lock($1)", [.int(key)]) }
                let refused = await #expect(throws: DeckhandError.self) {
                    try await client.execute("SELECT pg_advisory_lock($1)", [.int(key)])
                }
                _ = try await held.run { try $0.execute("SELECT pg_advisory_unlock($1)", [.int(key)]) }
                return refused
            }
            #expect(long?.code == .postgresStatementTimeout, "\(String(describing: long))")
            // A client that stalls inside a transaction (a dead worker's would stall for good) loses its session,
            // and with it its locks; the pool opens a new connection for the next call.
            let stalled = await #expect(throws: DeckhandError.self) {
                try await client.withReservedConnection { connection in
                    let pid = try await connection.run { connection -> Int32 in
                        try connection.simpleQuery("BEGIN")
                        return connection.backendPID
                    }
                    try await eventually("the server ends the idle transaction's session") {
                        let left = try await holder.query(
                            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                            [.int(Int64(pid))]
                        )
                        return try left[0].decode(Int.self, 0) == 0
                    }
                    try await connection.run { try $0.simpleQuery("SELECT 1") }
                }
            }
            #expect(stalled?.code == .unavailable, "\(String(describing: stalled))")
            #expect(try await client.query("SELECT 1")[0].decode(Int.self, 0) == 1)
            // Migrations wait for their lock and run without the limits, which come back after.
            let lifted = try await client.withAdvisoryLock(key: key) { connection in
                try connection.query(
                    """
                    SELECT current_setting('statement_timeout') || '/'
                        || current_setting('idle_in_transaction_session_timeout') AS limits
                    """
                ).first?.decode(String.self, "limits")
            }
            #expect(lifted == "0/0")
            #expect(try await client.query("SHOW statement_timeout")[0].decode(String.self, 0) == "300ms")
        }
    }

    @Test func listenReceivesNotifications() async throws {
        try await TestPostgres.withSchema { client in
            let channel = "deckhand events " + TestEnvironment.uniqueName("ch")  // needs quoting
            let stream = try await client.listen(channel: channel)
            try await client.notify(channel: channel, payload: "hello")
            try await client.notify(channel: channel, payload: "world")
            var received: [PostgresNotification] = []
            for try await notification in stream {
                received.append(notification)
                if received.count == 2 { break }
            }
            #expect(received.map(\.payload) == ["hello", "world"])
            #expect(received.allSatisfy { $0.channel == channel })
        }
    }

    @Test func listenerReconnectsAfterItsConnectionIsKilled() async throws {
        try await TestPostgres.withSchema { client in
            let channel = TestEnvironment.uniqueName("reconnect")
            let stream = try await client.listen(channel: channel)
            let killed = try await client.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1",
                [.text("LISTEN \"\(channel)\"")]
            )
            #expect(killed.count == 1)
            // Notifications sent while the listener is away are lost: keep sending until one arrives.
            let sender = Task {
                for attempt in 0..<100 {
                    try await client.notify(channel: channel, payload: "after \(attempt)")
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            var iterator = stream.makeAsyncIterator()
            let first = try await iterator.next()
            sender.cancel()
            #expect(first?.payload.hasPrefix("after ") == true)
        }
    }

    @Test func pipelineInsertsAThousandRows() async throws {
        try await TestPostgres.withSchema { client in
            try await client.execute("CREATE TABLE bulk (n bigint PRIMARY KEY, label text, blob bytea)")
            let rows = (0..<1000).map { n -> [PostgresValue] in
                [.int(Int64(n)), n % 7 == 0 ? .null : .text("row \(n)"), .bytea([UInt8(n % 256)])]
            }
            let affected = try await client.pipeline("INSERT INTO bulk VALUES ($1, $2, $3)", rows)
            #expect(affected == 1000)
            let summary = try await client.query("SELECT count(*) AS c, sum(n) AS s FROM bulk")[0]
            #expect(try summary.decode(Int.self, "c") == 1000)
            #expect(try summary.decode(Int.self, "s") == 999 * 1000 / 2)
            // A failing row rolls the whole pipeline back.
            let clash =
                (1000..<1010).map { n -> [PostgresValue] in [.int(Int64(n)), "x", .bytea([])] } + [[5, "dup", .null]]
            await #expect(throws: DeckhandError.self) {
                try await client.pipeline("INSERT INTO bulk VALUES ($1, $2, $3)", clash)
            }
            #expect(try await client.query("SELECT count(*) FROM bulk")[0].decode(Int.self, 0) == 1000)
        }
    }

    @Test func advisoryLocksAreHeldAndReleased() async throws {
        try await TestPostgres.withSchema { client in
            let key = Int64.random(in: 1..<Int64.max)
            let taken = try await client.transaction { connection in
                try connection.tryAdvisoryTransactionLock(key: key)
            }
            #expect(taken)
            // While one connection holds the session lock, another cannot take it; afterwards it can.
            let second = PostgresClient(url: TestEnvironment.postgresURL, poolSize: 1)
            let blocked = try await client.withAdvisoryLock(key: key) { _ in
                try runBlocking { try await second.transaction { try $0.tryAdvisoryTransactionLock(key: key) } }
            }
            #expect(blocked == false)
            #expect(try await second.transaction { try $0.tryAdvisoryTransactionLock(key: key) })
            await second.close()
        }
    }
}

/// Runs async work from a synchronous closure on a pool thread (test-only; the pool thread may block).
private func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let semaphore = DispatchSemaphore(value: 0)
    Task {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        semaphore.signal()
    }
    semaphore.wait()
    return try result.withLock { $0! }.get()
}
