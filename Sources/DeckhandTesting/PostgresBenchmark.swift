import DeckhandCore
import Foundation
import Postgres

/// Insert throughput of the Postgres client: autocommit inserts, inserts in one transaction, pipeline mode.
///
/// Each variant inserts `rows` rows with a ~1 KiB payload into a table of a throw-away schema.
public enum PostgresBenchmark {
    /// Runs the three variants against the database at `url` and returns rows per second for each.
    public static func run(url: String, rows: Int = 5000) async throws -> [(name: String, rowsPerSecond: Double)] {
        let schema = "bench_" + TestEnvironment.uniqueName("pg").replacingOccurrences(of: "-", with: "_")
        let admin = PostgresClient(url: url, poolSize: 1)
        try await admin.execute("CREATE SCHEMA \(schema)")
        let client = PostgresClient(url: TestPostgres.url(url, searchPath: schema), poolSize: 4)
        var results: [(name: String, rowsPerSecond: Double)] = []
        do {
            try await client.execute(
                "CREATE TABLE items (id bigserial PRIMARY KEY, batch text NOT NULL, n bigint NOT NULL, payload text NOT NULL)"
            )
            let payload = String(repeating: "deckhand-", count: 114)  // 1,026 bytes
            let sql = "INSERT INTO items (batch, n, payload) VALUES ($1, $2, $3)"
            func rate(_ start: ContinuousClock.Instant) -> Double {
                Double(rows) / (ContinuousClock.now - start).seconds
            }

            var start = ContinuousClock.now
            for n in 0..<rows {
                try await client.execute(sql, [.text("autocommit"), .int(Int64(n)), .text(payload)])
            }
            results.append(("autocommit", rate(start)))

            start = ContinuousClock.now
            try await client.transaction { connection in
                for n in 0..<rows {
                    try connection.execute(sql, [.text("transaction"), .int(Int64(n)), .text(payload)])
                }
            }
            results.append(("transaction", rate(start)))

            start = ContinuousClock.now
            let batch = (0..<rows).map { n -> [PostgresValue] in [.text("pipeline"), .int(Int64(n)), .text(payload)] }
            try await client.pipeline(sql, batch)
            results.append(("pipeline", rate(start)))
        } catch {
            await client.close()
            _ = try? await admin.execute("DROP SCHEMA \(schema) CASCADE")
            await admin.close()
            throw error
        }
        await client.close()
        try await admin.execute("DROP SCHEMA \(schema) CASCADE")
        await admin.close()
        return results
    }
}
