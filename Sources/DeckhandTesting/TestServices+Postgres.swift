import DeckhandCore
import Foundation
import Postgres

/// PostgreSQL for integration tests: each test works in a schema of its own, so tests run in parallel.
public enum TestPostgres {
    /// Creates a unique schema, runs `body` with a client whose `search_path` is that schema, then drops it.
    ///
    /// Throws `TestEnvironment.serviceMissing` (so the test fails with a hint) when PostgreSQL does not answer.
    public static func withSchema<T: Sendable>(
        poolSize: Int = 4,
        acquireTimeout: Duration = .seconds(10),
        session: PostgresSessionSettings = PostgresSessionSettings(),
        _ body: (PostgresClient) async throws -> T
    ) async throws -> T {
        try await withSchemaURL { url in
            let client = PostgresClient(url: url, poolSize: poolSize, acquireTimeout: acquireTimeout, session: session)
            let result: Result<T, any Error>
            do {
                result = .success(try await body(client))
            } catch {
                result = .failure(error)
            }
            await client.close()
            return try result.get()
        }
    }

    /// Creates a schema of its own for `body`, which gets a URL whose connections work in it; drops the
    /// schema afterwards.
    public static func withSchemaURL<T: Sendable>(_ body: (String) async throws -> T) async throws -> T {
        let base = TestEnvironment.postgresURL
        let schema = TestEnvironment.uniqueName("test").replacingOccurrences(of: "-", with: "_")
        let admin = PostgresClient(url: base, poolSize: 1, connectTimeout: .seconds(5))
        do {
            try await admin.execute("CREATE SCHEMA \(schema)")
        } catch let error as DeckhandError where error.code == .unavailable {
            await admin.close()
            throw TestEnvironment.serviceMissing("PostgreSQL", at: PostgresClient.redact(base), error)
        } catch {
            await admin.close()
            throw error
        }
        let result: Result<T, any Error>
        do {
            result = .success(try await body(url(base, searchPath: schema)))
        } catch {
            result = .failure(error)
        }
        do {
            try await admin.execute("DROP SCHEMA \(schema) CASCADE")
        } catch {
            await admin.close()
            if case .success = result { throw error }
            return try result.get()
        }
        await admin.close()
        return try result.get()
    }

    /// `base` with `options=-csearch_path=<schema>` added, so every connection works in `schema`.
    public static func url(_ base: String, searchPath schema: String) -> String {
        base + (base.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
    }
}
