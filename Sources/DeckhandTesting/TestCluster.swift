import DeckhandCore
import DeckhandStore
import Foundation
import Postgres

#if canImport(Glibc)
import Glibc
#endif

/// A cluster of `deploy/cluster.sh` for one test: Deckhand nodes (each a gateway, a conversation worker and a
/// runtime worker with process sandboxes), a 3-node RabbitMQ cluster and a PostgreSQL primary with a standby.
/// It has a state folder, broker node names and cgroups of its own, and fixed ports (brokers 5761–5763,
/// databases 5490–5491, gateways 3161…), so the drills run one at a time; it is taken down whatever happens.
public struct TestCluster: Sendable {
    public static let amqpBase = 5760
    public static let postgresPort = 5490
    public static let gatewayBase = 3160

    public let nodes: Int
    /// The prefix of its broker node names and cgroups.
    public let name: String
    /// The state folder (logs in `node-N/*.log`, `rabbitmq-N/log`).
    public let state: String
    /// What every `deploy/cluster.sh` call of this cluster gets in its environment.
    public let environment: [String: String]
    /// The URLs every node uses (every broker; both databases, libpq picking the one that takes writes).
    public let amqpURL: String
    public let postgresURL: String

    /// Starts a cluster of `nodes` nodes whose processes get `settings` (`DECKHAND_*` variables) besides the
    /// script's, runs `body`, and takes the cluster down.
    public static func with<T: Sendable>(
        nodes: Int = 3,
        settings: [String: String] = [:],
        _ body: (TestCluster) async throws -> T
    ) async throws -> T {
        guard getuid() == 0 else {
            throw DeckhandError(
                .unavailable,
                "the cluster drills run as root (PostgreSQL runs as the postgres user; partitions need iptables "
                    + "and cgroups): run scripts/test.sh as root"
            )
        }
        let name = TestEnvironment.uniqueName("dhc")
        var environment = settings
        environment["DECKHAND_CLUSTER_STATE"] = "/tmp/" + name
        environment["DECKHAND_CLUSTER_NAME"] = name
        environment["DECKHAND_CLUSTER_NODES"] = String(nodes)
        environment["DECKHAND_CLUSTER_AMQP_PORT"] = String(amqpBase)
        environment["DECKHAND_CLUSTER_PG_PORT"] = String(postgresPort)
        environment["DECKHAND_CLUSTER_GATEWAY_PORT"] = String(gatewayBase)
        environment["DECKHAND_CLUSTER_BINARY"] = TestRuntime.deckhandBinary
        let state = "/tmp/" + name
        let urls = try await script(["env"], environment)
        func exported(_ variable: String) throws -> String {
            let line = urls.split(separator: "\n").first { $0.hasPrefix("export \(variable)=") }
            guard let line else { throw DeckhandError(.internalError, "cluster.sh env printed no \(variable)") }
            return String(line.dropFirst("export \(variable)=".count))
        }
        let cluster = TestCluster(
            nodes: nodes,
            name: name,
            state: state,
            environment: environment,
            amqpURL: try exported("DECKHAND_AMQP_URL"),
            postgresURL: try exported("DECKHAND_POSTGRES_URL")
        )
        let result: Result<T, any Error>
        do {
            try await cluster.run("up")
            result = .success(try await body(cluster))
        } catch {
            result = .failure(error)
        }
        _ = try? await cluster.run("down")
        try? FileManager.default.removeItem(atPath: state)
        return try result.get()
    }

    /// `deploy/cluster.sh <arguments>` on this cluster; its output, or an error with it when it fails.
    @discardableResult
    public func run(_ arguments: String...) async throws -> String {
        try await Self.script(arguments, environment)
    }

    private static func script(_ arguments: [String], _ environment: [String: String]) async throws -> String {
        let (status, output) = try await TestEnvironment.launchDetached(
            "deploy/cluster.sh",
            arguments,
            environment: environment
        )
        guard status == 0 else {
            throw DeckhandError(
                .internalError,
                "deploy/cluster.sh \(arguments.joined(separator: " ")) exited \(status): \(output.suffix(4000))"
            )
        }
        return output
    }

    /// Node `node`'s gateway, `http://127.0.0.1:<port>`.
    public func gatewayURL(_ node: Int) -> String { "http://127.0.0.1:\(Self.gatewayBase + node)" }

    /// A new API key for the user `user` (created if missing).
    public func createKey(user: String) async throws -> String {
        let postgres = PostgresClient(url: postgresURL, poolSize: 1)
        do {
            let key = try await APIKeyStore(postgres: postgres).create(user: user).key
            await postgres.close()
            return key
        } catch {
            await postgres.close()
            throw error
        }
    }

    /// The processes of node `node`'s cgroup: its roles' and its sandboxes'.
    public func cgroupProcesses(node: Int) -> Set<Int32> {
        let v2 =
            FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.procs")
            ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified"
        let text = (try? String(contentsOfFile: "\(v2)/\(name)-node-\(node)/cgroup.procs", encoding: .utf8)) ?? ""
        return Set(text.split(separator: "\n").compactMap { Int32($0) })
    }

    /// The last `characters` of what node `node`'s `role` logged (for failure messages).
    public func log(node: Int, _ role: String, characters: Int = 3000) -> String {
        let text = (try? String(contentsOfFile: "\(state)/node-\(node)/\(role).log", encoding: .utf8)) ?? "(no log)"
        return String(text.suffix(characters))
    }
}
