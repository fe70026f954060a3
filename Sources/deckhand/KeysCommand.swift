import ArgumentParser
import DeckhandCore
import DeckhandStore
import Foundation
import Gateway
import Postgres

/// `deckhand keys create|list|revoke`: the API keys of the gateway's users.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Create, list and revoke API keys (Authorization: Bearer <key>).",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a key for a user (the user too, if new) and print it: it is shown only this once."
        )

        @OptionGroup var options: GlobalOptions

        @Option(help: "The user's name.")
        var user: String

        @Option(help: "A label to tell the key apart in listings.")
        var name = ""

        @Option(help: "What the key opens: gateway (the conversation API) or runtime_api (deckhand runtime-api).")
        var scope: APIKeyScope = .gateway

        func validate() throws {
            guard !user.isEmpty, user.count <= 100 else {
                throw ValidationError("--user must be 1 to 100 characters")
            }
        }

        func run() async throws {
            try await withKeyStore(options) { keys in
                let created = try await keys.create(user: user, name: name, scope: scope)
                print(created.key)
                FileHandle.standardError.write(
                    Data(
                        "deckhand keys: created \(scope.rawValue) key \(created.prefix)… (id \(created.id)) for user \(user)\n"
                            .utf8
                    )
                )
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (prefix, user, dates), never the keys.")

        @OptionGroup var options: GlobalOptions

        @Option(help: "Only this user's keys.")
        var user: String?

        func run() async throws {
            try await withKeyStore(options) { keys in
                print("ID\tPREFIX\tUSER\tNAME\tSCOPE\tCREATED\tLAST USED\tSTATE")
                for key in try await keys.list(user: user) {
                    let state = key.revoked ? "revoked" : "active"
                    let scopes = key.scopes.map(\.rawValue).sorted().joined(separator: ",")
                    print(
                        "\(key.id)\t\(key.prefix)\t\(key.user)\t\(key.name)\t\(scopes)\t\(key.createdAt)\t\(key.lastUsedAt ?? "-")\t\(state)"
                    )
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a key by id or prefix; gateways stop accepting it within gateway.key_cache_ttl."
        )

        @OptionGroup var options: GlobalOptions

        @Argument(help: "The key's id or its prefix (as `deckhand keys list` shows them).")
        var key: String

        func run() async throws {
            try await withKeyStore(options) { keys in
                guard try await keys.revoke(key) else {
                    FileHandle.standardError.write(Data("deckhand keys: no active key \(key)\n".utf8))
                    throw ExitCode(1)
                }
                print("revoked \(key)")
            }
        }
    }
}

/// Runs `body` with the key store on a migrated database; a failure is printed and exits 1.
private func withKeyStore(_ options: GlobalOptions, _ body: (APIKeyStore) async throws -> Void) async throws {
    let configuration = try options.loadConfiguration()
    let postgres = PostgresClient(settings: configuration.postgres)
    do {
        try await DeckhandSchema.migrate(postgres)
        try await body(APIKeyStore(postgres: postgres))
        await postgres.close()
    } catch let exit as ExitCode {
        await postgres.close()
        throw exit
    } catch {
        await postgres.close()
        FileHandle.standardError.write(
            Data("deckhand keys: \((error as? DeckhandError)?.message ?? "\(error)")\n".utf8)
        )
        throw ExitCode(1)
    }
}

extension APIKeyScope: ExpressibleByArgument {}
