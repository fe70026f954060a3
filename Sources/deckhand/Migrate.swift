import ArgumentParser
import DeckhandCore
import DeckhandStore
import Foundation
import Postgres

/// `deckhand migrate`: applies the database migrations that are missing.
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Apply the missing PostgreSQL migrations (safe to run any number of times, from any number of hosts).",
        discussion: "Migrations are applied in order, each in its own transaction, under an advisory lock."
    )

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let configuration = try options.loadConfiguration()
        let client = PostgresClient(settings: configuration.postgres)
        do {
            let applied = try await DeckhandSchema.migrate(client)
            if applied.isEmpty {
                print("migrate: the schema is up to date (\(try DeckhandSchema.migrations.count) migrations)")
            } else {
                for migration in applied {
                    print("migrate: applied \(String(format: "%04d", migration.version))_\(migration.name)")
                }
            }
            await client.close()
        } catch {
            await client.close()
            FileHandle.standardError.write(
                Data("deckhand migrate: \((error as? DeckhandError)?.message ?? "\(error)")\n".utf8)
            )
            throw ExitCode(1)
        }
    }
}
