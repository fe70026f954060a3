import AMQP
import ArgumentParser
import DeckhandCore
import Foundation
import HTTPClient
import Logging
import Postgres
import RuntimeBackends

/// `deckhand check`: can this process reach everything it needs?
struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to RabbitMQ, PostgreSQL and (if configured) the Docker engine, and print their versions.",
        discussion: "Exits non-zero, naming the service, when one of them cannot be reached."
    )

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let configuration = try options.loadConfiguration()
        var failures: [String] = []

        func report(_ service: String, _ result: Result<String, any Error>) {
            switch result {
            case .success(let version):
                print("\(service): ok (\(version))")
            case .failure(let error):
                print("\(service): FAILED: \((error as? DeckhandError)?.message ?? "\(error)")")
                failures.append(service)
            }
        }

        report("rabbitmq", await Result { try await Self.checkRabbitMQ(configuration.amqp) })
        report("postgres", await Result { try await Self.checkPostgres(configuration.postgres) })
        if let socket = configuration.docker.socket {
            report(
                "docker",
                await Result { try await Self.checkDocker(socket: socket, settings: configuration.docker) }
            )
        } else {
            print("docker: not configured (docker.socket is empty)")
        }

        if !failures.isEmpty {
            FileHandle.standardError.write(
                Data("deckhand check: cannot reach \(failures.joined(separator: ", "))\n".utf8)
            )
            throw ExitCode(1)
        }
    }

    static func checkRabbitMQ(_ settings: AMQPSettings) async throws -> String {
        var configuration = AMQPConnection.Configuration(settings: settings, name: "deckhand-check")
        configuration.publishTimeout = settings.connectTimeout
        let connection = try await AMQPConnection.connect(configuration: configuration)
        let version = connection.status.serverVersion ?? "unknown version"
        await connection.close()
        return "RabbitMQ \(version) at \(settings.url.host):\(settings.url.port)"
    }
}

extension Check {
    static func checkPostgres(_ settings: PostgresSettings) async throws -> String {
        let client = PostgresClient(settings: settings)
        do {
            let rows = try await client.query("SELECT current_setting('server_version'), current_database()", [])
            let version = try rows.first?.decode(String.self, 0) ?? "unknown version"
            let database = try rows.first?.decode(String.self, 1) ?? "?"
            await client.close()
            return "PostgreSQL \(version), database \(database) at \(client.redactedURL)"
        } catch {
            await client.close()
            throw error
        }
    }
}

extension Check {
    /// The Docker Engine API answers `GET /version` over its unix socket.
    static func checkDocker(socket: String, settings: DockerSettings) async throws -> String {
        let client = try HTTPClient()
        // Only asked its version: the deployment label names no container.
        let backend = DockerBackend(
            socket: socket,
            settings: settings,
            deployment: "deckhand-check",
            client: client,
            logger: Logger(label: "deckhand.check")
        )
        do {
            let version = try await backend.engineVersion()
            await client.shutdown()
            return "Docker Engine \(version.engine), API \(version.api) at \(socket)"
        } catch {
            await client.shutdown()
            throw error
        }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}
