import DeckhandCore
import Foundation
import Postgres

/// Deckhand's database schema: the numbered SQL files in `Migrations/` (`0001_initial.sql`, …).
public enum DeckhandSchema {
    /// The migrations shipped with this module, sorted by number.
    public static var migrations: [PostgresMigration] {
        get throws {
            guard let directory = Bundle.module.url(forResource: "Migrations", withExtension: nil) else {
                throw DeckhandError(.internalError, "the Migrations folder is missing from the DeckhandStore bundle")
            }
            let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            var migrations: [PostgresMigration] = []
            for file in files where file.hasSuffix(".sql") {
                let stem = file.dropLast(4)
                guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]) else {
                    throw DeckhandError(
                        .internalError,
                        "migration file \(file) is not named NNNN_name.sql"
                    )
                }
                let sql = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
                migrations.append(
                    PostgresMigration(version: version, name: String(stem[stem.index(after: underscore)...]), sql: sql)
                )
            }
            return migrations.sorted { $0.version < $1.version }
        }
    }

    /// Applies the missing migrations (under an advisory lock) and returns those it applied.
    @discardableResult
    public static func migrate(_ client: PostgresClient) async throws -> [PostgresMigration] {
        try await PostgresMigrator(migrations: migrations).migrate(client)
    }
}
