import DeckhandCore
import Logging

/// One numbered schema change: a fixed SQL text (possibly several statements) applied once.
public struct PostgresMigration: Sendable, Hashable {
    /// The order key; each version is applied at most once.
    public var version: Int
    /// A short name (the file name without number and extension).
    public var name: String
    /// The SQL, run with the simple protocol inside the migration's own transaction.
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Applies missing migrations in version order, each in its own transaction, and records them in
/// `schema_migrations`, all under a session advisory lock so that processes starting together apply each once.
public struct PostgresMigrator: Sendable {
    /// The migrations, in any order (they are sorted by version).
    public let migrations: [PostgresMigration]
    /// The session advisory lock held while migrating.
    public let lockKey: Int64
    private let logger: Logger

    /// The default advisory lock key: "deckhand" in ASCII.
    public static let defaultLockKey: Int64 = 0x6465_636B_6861_6E64

    /// A migrator for `migrations`; fails when two share a version.
    public init(
        migrations: [PostgresMigration],
        lockKey: Int64 = PostgresMigrator.defaultLockKey,
        logger: Logger = Logger(label: "deckhand.postgres.migrate")
    ) throws(DeckhandError) {
        var seen: Set<Int> = []
        for migration in migrations where !seen.insert(migration.version).inserted {
            throw DeckhandError(.internalError, "two migrations have version \(migration.version)")
        }
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.lockKey = lockKey
        self.logger = logger
    }

    /// Applies the migrations that are not recorded yet and returns them (empty when there was nothing to do).
    @discardableResult
    public func migrate(_ client: PostgresClient) async throws -> [PostgresMigration] {
        let logger = self.logger
        // Every process migrates as it starts, and the lock is one for the whole database: a schema already up
        // to date (the usual case) is seen without it, so a start never waits behind another schema's migrations.
        // Versions only ever get added, so what is recorded stays recorded; anything missing is done under the lock.
        guard try await !client.withConnection({ try self.missing(on: $0).isEmpty }) else { return [] }
        return try await client.withAdvisoryLock(key: lockKey) { connection in
            try connection.simpleQuery(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version bigint PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            var done: [PostgresMigration] = []
            for migration in try self.missing(on: connection) {
                let started = ContinuousClock.now
                do {
                    try connection.transaction { connection in
                        try connection.simpleQuery(migration.sql)
                        try connection.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                            [.int(Int64(migration.version)), .text(migration.name)]
                        )
                    }
                } catch {
                    throw DeckhandError(
                        .postgresQuery,
                        "migration \(migration.version) (\(migration.name)) failed",
                        underlying: error
                    )
                }
                let elapsed = ContinuousClock.now - started
                logger.info(
                    "applied a migration",
                    metadata: [
                        LogKey.postgresMigration.rawValue: "\(migration.version)_\(migration.name)",
                        LogKey.durationMilliseconds.rawValue:
                            "\(Int(elapsed.milliseconds))",
                    ]
                )
                done.append(migration)
            }
            return done
        }
    }

    /// The migrations `schema_migrations` does not record, in order: all of them when the table is not there yet.
    private func missing(on connection: PostgresConnection) throws -> [PostgresMigration] {
        let table = try connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL")
        guard try table.first?.decode(Bool.self, 0) == true else { return migrations }
        let applied = Set(
            try connection.query("SELECT version FROM schema_migrations").map { try $0.decode(Int.self, 0) }
        )
        return migrations.filter { !applied.contains($0.version) }
    }
}
