import DeckhandCore
import DeckhandTesting
import Foundation
import Testing

/// The `deckhand` executable as an operator runs it (built by `swift build --build-tests`).
@Suite struct DeckhandCommandTests {
    static var binary: String { TestEnvironment.repositoryRoot + "/.build/debug/deckhand" }

    /// Runs `deckhand` with `arguments` and extra environment; its exit code and what it printed.
    static func deckhand(
        _ arguments: [String],
        environment: [String: String] = [:]
    ) async throws
        -> (status: Int32, output: String)
    {
        try await TestEnvironment.launchDetached(
            binary,
            arguments,
            environment: environment,
            directory: FileManager.default.temporaryDirectory.path
        )
    }

    @Test func migrateAppliesOnceAndCheckReportsEveryService() async throws {
        try await TestPostgres.withSchemaURL { url in
            let environment = [
                "DECKHAND_POSTGRES_URL": url, "DECKHAND_AMQP_URL": TestEnvironment.amqpURL,
                "DECKHAND_DOCKER_SOCKET": TestEnvironment.dockerSocket,
            ]
            let first = try await Self.deckhand(["migrate"], environment: environment)
            #expect(first.status == 0, "\(first.output)")
            #expect(first.output.contains("applied 0001_initial"))
            let second = try await Self.deckhand(["migrate"], environment: environment)
            #expect(second.status == 0)
            #expect(second.output.contains("up to date"))

            let check = try await Self.deckhand(["check"], environment: environment)
            #expect(check.status == 0, "\(check.output)")
            #expect(check.output.contains("rabbitmq: ok (RabbitMQ 3."))
            #expect(check.output.contains("postgres: ok (PostgreSQL 15"))
            #expect(check.output.contains("docker: ok (Docker Engine"))
            #expect(!check.output.contains("deckhand:deckhand@"), "the password never appears")
        }
    }

    @Test func keysAreCreatedOnceListedWithoutTheKeyAndRevoked() async throws {
        try await TestPostgres.withSchemaURL { url in
            let environment = ["DECKHAND_POSTGRES_URL": url]
            let created = try await Self.deckhand(
                ["keys", "create", "--user", "alice", "--name", "laptop"],
                environment: environment
            )
            #expect(created.status == 0, "\(created.output)")
            let key = try #require(
                created.output.split(separator: "\n").map(String.init).first { $0.hasPrefix("dh_") && $0.count == 67 }
            )
            let listed = try await Self.deckhand(["keys", "list", "--user", "alice"], environment: environment)
            #expect(listed.status == 0)
            #expect(listed.output.contains(String(key.prefix(12))))
            #expect(listed.output.contains("laptop") && listed.output.contains("active"))
            #expect(!listed.output.contains(key), "a listing never shows the key")
            // A key for deckhand runtime-api says its scope; a scope that does not exist is refused by name.
            let provider = try await Self.deckhand(
                ["keys", "create", "--user", "alice", "--scope", "runtime_api"],
                environment: environment
            )
            #expect(provider.status == 0, "\(provider.output)")
            let scoped = try await Self.deckhand(["keys", "list", "--user", "alice"], environment: environment)
            #expect(scoped.output.contains("runtime_api") && scoped.output.contains("gateway"))
            let badScope = try await Self.deckhand(
                ["keys", "create", "--user", "alice", "--scope", "root"],
                environment: environment
            )
            #expect(badScope.status != 0 && badScope.output.contains("scope"), "\(badScope.output)")

            let revoked = try await Self.deckhand(["keys", "revoke", String(key.prefix(12))], environment: environment)
            #expect(revoked.status == 0, "\(revoked.output)")
            #expect(try await Self.deckhand(["keys", "list"], environment: environment).output.contains("revoked"))
            let again = try await Self.deckhand(["keys", "revoke", String(key.prefix(12))], environment: environment)
            #expect(again.status == 1)
            #expect(again.output.contains("no active key"))
            let missingUser = try await Self.deckhand(["keys", "create"], environment: environment)
            #expect(missingUser.status != 0)
            #expect(missingUser.output.contains("--user"))
        }
    }

    @Test func checkNamesTheServiceItCannotReach() async throws {
        let result = try await Self.deckhand(
            ["check"],
            environment: ["DECKHAND_POSTGRES_URL": "postgresql://deckhand:sup3rsecret@127.0.0.1:1/deckhand"]
        )
        #expect(result.status == 1)
        #expect(result.output.contains("postgres: FAILED"))
        #expect(result.output.contains("cannot reach postgres"))
        #expect(!result.output.contains("sup3rsecret"))
    }

    @Test func aBadValueStopsWithExitCode2NamingTheKey() async throws {
        let result = try await Self.deckhand(["check"], environment: ["DECKHAND_AMQP_PREFETCH": "lots"])
        #expect(result.status == 2)
        #expect(result.output.contains("amqp.prefetch"))
        #expect(result.output.contains("DECKHAND_AMQP_PREFETCH"))

        let missingFile = try await Self.deckhand(["migrate", "--config", "/definitely/missing.conf"])
        #expect(missingFile.status == 2)
        #expect(missingFile.output.contains("/definitely/missing.conf"))
    }
}
