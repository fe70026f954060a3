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
