import AMQP
import DeckhandCore
import Foundation

/// RabbitMQ for integration tests.
public enum TestAMQP {
    /// The broker's URL, parsed.
    public static var url: AMQPURL {
        get throws {
            guard let url = AMQPURL(TestEnvironment.amqpURL) else {
                throw DeckhandError(.invalidConfiguration, "DECKHAND_AMQP_URL is not an amqp:// URL")
            }
            return url
        }
    }

    /// Connects to the test broker with a connection name unique to the test; fails with a message that says
    /// how to start RabbitMQ when it does not answer.
    public static func connect(
        name: String,
        configure: (inout AMQPConnection.Configuration) -> Void = { _ in }
    ) async throws -> AMQPConnection {
        var configuration = AMQPConnection.Configuration(url: try url, name: name)
        configuration.connectTimeout = .seconds(5)
        configuration.reconnectMin = .milliseconds(50)
        configuration.reconnectMax = .milliseconds(500)
        configure(&configuration)
        do {
            return try await AMQPConnection.connect(configuration: configuration)
        } catch {
            throw TestEnvironment.serviceMissing("RabbitMQ", at: "\(try url.host):\(try url.port)", error)
        }
    }

    /// The broker's state of each connection whose name contains `name` (`running`, `blocking`, `blocked`,
    /// …), by connection name.
    public static func connectionStates(named name: String) async throws -> [String: String] {
        let listing = try await TestEnvironment.runDetached(
            "deploy/local/services.sh",
            ["rabbitmqctl", "list_connections", "-q", "--no-table-headers", "state", "client_properties"]
        )
        var states: [String: String] = [:]
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: "\t", maxSplits: 1)
            guard fields.count == 2, let start = fields[1].range(of: "{\"connection_name\",\"") else { continue }
            let rest = fields[1][start.upperBound...]
            guard let end = rest.firstIndex(of: "\""), rest[..<end].contains(name) else { continue }
            states[String(rest[..<end])] = String(fields[0])
        }
        return states
    }

    /// Raises the broker's memory alarm (a watermark far below what it uses) or clears it (the default
    /// watermark, 0.4). The alarm blocks every publishing connection of the broker: only a test that runs
    /// alone may raise it (`scripts/test.sh` runs `BrokerAlarmTests` in a phase of its own).
    public static func setMemoryAlarm(_ raised: Bool) async throws {
        _ = try await TestEnvironment.runDetached(
            "deploy/local/services.sh",
            ["rabbitmqctl", "set_vm_memory_high_watermark", raised ? "0.00001" : "0.4"]
        )
    }

    /// Forcibly closes, from the broker's side, every connection whose name contains `name`; returns how
    /// many it closed. Only this test's connections are touched, so tests running beside it are not.
    @discardableResult
    public static func closeConnections(named name: String) async throws -> Int {
        let listing = try await TestEnvironment.runDetached(
            "deploy/local/services.sh",
            ["rabbitmqctl", "list_connections", "-q", "--no-table-headers", "pid", "client_properties"]
        )
        let pids = listing.split(separator: "\n")
            .filter { $0.contains("{\"connection_name\",\"\(name)") }
            .compactMap { $0.split(separator: "\t").first.map(String.init) }
        // One rabbitmqctl per connection, all at once: each takes ~0.4 s to start.
        try await withThrowingTaskGroup(of: String.self) { group in
            for pid in pids {
                group.addTask {
                    try await TestEnvironment.runDetached(
                        "deploy/local/services.sh",
                        ["rabbitmqctl", "close_connection", pid, "fault injected by a test"]
                    )
                }
            }
            try await group.waitForAll()
        }
        return pids.count
    }
}
