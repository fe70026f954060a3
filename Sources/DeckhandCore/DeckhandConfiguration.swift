/// Everything a Deckhand process is configured with, with complete defaults for a local machine.
///
/// Read with ``DeckhandConfiguration/init(reader:)`` from `config/deckhand.conf` and `DECKHAND_*` variables;
/// `config/deckhand.conf` documents each key.
public struct DeckhandConfiguration: Sendable {
    public var amqp: AMQPSettings
    public var postgres: PostgresSettings
    public var docker: DockerSettings
    public var runtime: RuntimeSettings
    public var remote: RemoteSettings
    public var modal: ModalSettings
    public var llm: LLMSettings
    public var agent: AgentSettings
    public var gateway: GatewaySettings
    public var runtimeAPI: RuntimeAPISettings
    public var log: LogSettings
    public var node: NodeSettings
    public var metrics: MetricsSettings

    public init(
        amqp: AMQPSettings = .init(),
        postgres: PostgresSettings = .init(),
        docker: DockerSettings = .init(),
        runtime: RuntimeSettings = .init(),
        remote: RemoteSettings = .init(),
        modal: ModalSettings = .init(),
        llm: LLMSettings = .init(),
        agent: AgentSettings = .init(),
        gateway: GatewaySettings = .init(),
        runtimeAPI: RuntimeAPISettings = .init(),
        log: LogSettings = .init(),
        node: NodeSettings = .init(),
        metrics: MetricsSettings = .init()
    ) {
        self.amqp = amqp
        self.postgres = postgres
        self.docker = docker
        self.runtime = runtime
        self.remote = remote
        self.modal = modal
        self.llm = llm
        self.agent = agent
        self.gateway = gateway
        self.runtimeAPI = runtimeAPI
        self.log = log
        self.node = node
        self.metrics = metrics
    }

    /// Every key this configuration reads; a key in the file that is not here is a mistake.
    public static let knownKeys: Set<String> = AMQPSettings.keys.union(PostgresSettings.keys)
        .union(DockerSettings.keys).union(RuntimeSettings.keys).union(RemoteSettings.keys).union(ModalSettings.keys)
        .union(LLMSettings.keys)
        .union(AgentSettings.keys)
        .union(GatewaySettings.keys).union(RuntimeAPISettings.keys).union(LogSettings.keys).union(NodeSettings.keys)
        .union(MetricsSettings.keys)

    /// Reads every section; fails on the first bad value, or on a file key that no section knows.
    public init(reader: ConfigurationReader) throws(DeckhandError) {
        let unknown = reader.fileKeys.filter { !Self.knownKeys.contains($0) }
        if let first = unknown.first {
            throw DeckhandError(
                .invalidConfiguration,
                "\(first): unknown configuration key (known keys: \(Self.knownKeys.sorted().joined(separator: ", ")))"
            )
        }
        self.amqp = try AMQPSettings(reader: reader)
        self.postgres = try PostgresSettings(reader: reader)
        self.docker = try DockerSettings(reader: reader)
        self.runtime = try RuntimeSettings(reader: reader)
        self.remote = try RemoteSettings(reader: reader)
        self.modal = try ModalSettings(reader: reader)
        self.llm = try LLMSettings(reader: reader)
        self.agent = try AgentSettings(reader: reader)
        self.gateway = try GatewaySettings(reader: reader)
        self.runtimeAPI = try RuntimeAPISettings(reader: reader)
        self.log = try LogSettings(reader: reader)
        self.node = try NodeSettings(reader: reader)
        self.metrics = try MetricsSettings(reader: reader)
    }
}

/// How to reach RabbitMQ and how patient to be with it.
public struct AMQPSettings: Sendable {
    /// `amqp.url`: the broker, `amqp://user:password@host:port/vhost`, or a cluster's nodes,
    /// `amqp://user:password@a:5672,b:5672/vhost` (tried in turn).
    public var url: AMQPURL = AMQPURL()
    /// `amqp.heartbeat`: AMQP heartbeat interval; a connection silent for two intervals is dead.
    public var heartbeat: Duration = .seconds(30)
    /// `amqp.connect_timeout`: how long one connection attempt (TCP + handshake) may take.
    public var connectTimeout: Duration = .seconds(10)
    /// `amqp.publish_timeout`: how long a publish may wait for a confirm, across reconnects, before it fails.
    public var publishTimeout: Duration = .seconds(30)
    /// `amqp.confirm_window`: the most published messages awaiting a broker confirm on one connection.
    public var confirmWindow: Int = 1000
    /// `amqp.prefetch`: deliveries a consumer holds unacknowledged (`basic.qos`), so the work in flight.
    public var prefetch: Int = 32
    /// `amqp.reconnect_min`: the first back-off after a lost connection (doubling, with jitter).
    public var reconnectMin: Duration = .milliseconds(100)
    /// `amqp.reconnect_max`: the longest back-off between reconnect attempts.
    public var reconnectMax: Duration = .seconds(5)

    public init() {}

    static let keys: Set<String> = [
        "amqp.url", "amqp.heartbeat", "amqp.connect_timeout", "amqp.publish_timeout", "amqp.confirm_window",
        "amqp.prefetch", "amqp.reconnect_min", "amqp.reconnect_max",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        if let text = reader.raw("amqp.url") {
            guard let url = AMQPURL(text) else {
                // The value may hold a password: name the key and the expected shape, not the value.
                throw DeckhandError(
                    .invalidConfiguration,
                    "amqp.url: expected amqp://user:password@host:port/vhost, or host:port,host:port for a cluster (the value is not shown; it may hold a password)"
                )
            }
            self.url = url
        }
        heartbeat = try reader.duration("amqp.heartbeat", default: heartbeat)
        connectTimeout = try reader.duration("amqp.connect_timeout", default: connectTimeout, minimum: .milliseconds(1))
        publishTimeout = try reader.duration("amqp.publish_timeout", default: publishTimeout, minimum: .milliseconds(1))
        confirmWindow = try reader.int("amqp.confirm_window", default: confirmWindow, range: 1...65_535)
        prefetch = try reader.int("amqp.prefetch", default: prefetch, range: 1...65_535)
        reconnectMin = try reader.duration("amqp.reconnect_min", default: reconnectMin, minimum: .milliseconds(1))
        reconnectMax = try reader.duration("amqp.reconnect_max", default: reconnectMax, minimum: reconnectMin)
    }
}

/// How to reach PostgreSQL.
public struct PostgresSettings: Sendable {
    /// `postgres.url`: a libpq connection URL, `postgresql://user:password@host:port/database?options`.
    public var url: String = "postgresql://deckhand:deckhand@127.0.0.1:5432/deckhand"
    /// `postgres.pool_size`: the most connections one process opens.
    public var poolSize: Int = 8
    /// `postgres.acquire_timeout`: how long a query waits for a free connection before it fails.
    public var acquireTimeout: Duration = .seconds(10)
    /// `postgres.connect_timeout`: how long opening one connection may take.
    public var connectTimeout: Duration = .seconds(10)
    /// `postgres.keepalives_idle`: TCP keepalives start after this much silence (nil, from `0s`: off); a dead
    /// server is noticed about twice this long after its last reply.
    public var keepalivesIdle: Duration? = .seconds(30)
    /// `postgres.statement_timeout`: the server cancels a statement that runs longer (nil, from `0s`: never).
    public var statementTimeout: Duration? = .seconds(60)
    /// `postgres.idle_in_transaction_timeout`: the server ends a session idle this long inside a transaction,
    /// releasing its locks (nil, from `0s`: never).
    public var idleInTransactionTimeout: Duration? = .seconds(60)

    public init() {}

    static let keys: Set<String> = [
        "postgres.url", "postgres.pool_size", "postgres.acquire_timeout", "postgres.connect_timeout",
        "postgres.keepalives_idle", "postgres.statement_timeout", "postgres.idle_in_transaction_timeout",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        if let text = reader.raw("postgres.url") {
            guard text.hasPrefix("postgresql://") || text.hasPrefix("postgres://") else {
                throw DeckhandError(
                    .invalidConfiguration,
                    "postgres.url: expected postgresql://user:password@host:port/database (the value is not shown; it may hold a password)"
                )
            }
            url = text
        }
        poolSize = try reader.int("postgres.pool_size", default: poolSize, range: 1...1000)
        acquireTimeout = try reader.duration(
            "postgres.acquire_timeout",
            default: acquireTimeout,
            minimum: .milliseconds(1)
        )
        connectTimeout = try reader.duration("postgres.connect_timeout", default: connectTimeout, minimum: .seconds(1))
        keepalivesIdle = try Self.optional(reader, "postgres.keepalives_idle", keepalivesIdle, minimum: .seconds(1))
        statementTimeout = try Self.optional(reader, "postgres.statement_timeout", statementTimeout)
        idleInTransactionTimeout = try Self.optional(
            reader,
            "postgres.idle_in_transaction_timeout",
            idleInTransactionTimeout
        )
    }

    /// A duration where `0s` means off (nil); otherwise at least `minimum`.
    private static func optional(
        _ reader: ConfigurationReader,
        _ key: String,
        _ defaultValue: Duration?,
        minimum: Duration = .milliseconds(1)
    ) throws(DeckhandError) -> Duration? {
        let value = try reader.duration(key, default: defaultValue ?? .zero)
        guard value != .zero else { return nil }
        guard value >= minimum else {
            let expected = "0s (off) or a duration of at least \(minimum)"
            throw reader.invalid(key, expected: expected, got: reader.raw(key) ?? "")
        }
        return value
    }
}

/// Where the Docker Engine API answers, if anywhere, and how Docker sandboxes are confined.
public struct DockerSettings: Sendable {
    /// How a Docker sandbox's server is reached.
    public enum Network: String, Sendable {
        /// On the bridge network `docker.bridge_network` (made when missing), away from the host's network;
        /// the container's port 8000 published on 127.0.0.1 at a port Docker picks.
        case bridge
        /// The host's network; each sandbox listens on 127.0.0.1 at a port the kernel picks.
        case host
    }

    /// `docker.socket`: path of the Docker Engine API's unix socket; empty means no Docker engine is used.
    public var socket: String? = nil
    /// `docker.network`: `bridge` or `host`.
    public var network: Network = .bridge
    /// `docker.memory`: a sandbox's memory limit in bytes (written 512m, 4g; 0: none).
    public var memoryBytes: Int = 4 << 30
    /// `docker.cpus`: a sandbox's CPU limit in CPUs (0: none).
    public var cpus: Double = 2
    /// `docker.pids_limit`: the most processes in a sandbox (0: none).
    public var pidsLimit: Int = 2048
    /// `docker.bridge_network`: the network of bridge-networked sandboxes (`bridge`: Docker's default one).
    public var bridgeNetwork: String = "deckhand-sandboxes"
    /// `docker.bridge_subnet`: the addresses of `docker.bridge_network` when Deckhand makes it.
    public var bridgeSubnet: String = "198.18.0.0/24"
    /// `docker.user`: the image's unprivileged user the sandbox server (and the agent's shell) runs as once
    /// it has read its key; empty: root (an image without such a user).
    public var user: String = "sandbox"
    /// `docker.tmp_size`: the size of a sandbox's `/tmp` and of its home (memory-backed; the root file system
    /// is read-only).
    public var tmpBytes: Int = 256 << 20

    public init() {}

    static let keys: Set<String> = [
        "docker.socket", "docker.network", "docker.memory", "docker.cpus", "docker.pids_limit",
        "docker.bridge_network", "docker.bridge_subnet", "docker.user", "docker.tmp_size",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        socket = reader.optionalString("docker.socket")
        if let socket, !socket.hasPrefix("/") {
            throw reader.invalid("docker.socket", expected: "an absolute path to a unix socket", got: socket)
        }
        network =
            Network(rawValue: try reader.choice("docker.network", default: "bridge", choices: ["bridge", "host"]))
            ?? .bridge
        if let text = reader.raw("docker.memory") {
            guard let bytes = Self.parseBytes(text) else {
                throw reader.invalid("docker.memory", expected: "a size such as 512m or 4g (0: no limit)", got: text)
            }
            memoryBytes = bytes
        }
        if let text = reader.raw("docker.cpus") {
            guard let value = Double(text), value >= 0, value <= 1024 else {
                throw reader.invalid("docker.cpus", expected: "a number of CPUs such as 1.5 (0: no limit)", got: text)
            }
            cpus = value
        }
        pidsLimit = try reader.int("docker.pids_limit", default: pidsLimit, range: 0...4_194_304)
        bridgeNetwork = reader.string("docker.bridge_network", default: bridgeNetwork)
        if bridgeNetwork.isEmpty || bridgeNetwork == "host" || bridgeNetwork == "none" {
            throw reader.invalid("docker.bridge_network", expected: "the name of a bridge network", got: bridgeNetwork)
        }
        bridgeSubnet = reader.string("docker.bridge_subnet", default: bridgeSubnet)
        if !bridgeSubnet.contains("/") {
            throw reader.invalid(
                "docker.bridge_subnet",
                expected: "an address range such as 198.18.0.0/24",
                got: bridgeSubnet
            )
        }
        user = reader.string("docker.user", default: user)
        if let text = reader.optionalString("docker.tmp_size") {
            guard let bytes = Self.parseBytes(text), bytes >= 1 << 20 else {
                throw reader.invalid("docker.tmp_size", expected: "a size of at least 1m, such as 256m", got: text)
            }
            tmpBytes = bytes
        }
    }

    /// Parses `1048576`, `512k`, `512m`, `4g` into bytes.
    public static func parseBytes(_ text: String) -> Int? {
        let lowered = text.lowercased()
        let units: [(suffix: String, factor: Int)] = [("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)]
        for unit in units where lowered.hasSuffix(unit.suffix) {
            guard let number = Double(lowered.dropLast()), number >= 0, number < 1e6 else { return nil }
            return Int(number * Double(unit.factor))
        }
        guard let bytes = Int(lowered), bytes >= 0 else { return nil }
        return bytes
    }
}

/// Logging.
public struct LogSettings: Sendable {
    /// `log.level`: `trace|debug|info|notice|warning|error|critical`.
    public var level: String = "info"

    public init() {}

    static let keys: Set<String> = ["log.level"]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        level = try reader.choice(
            "log.level",
            default: level,
            choices: ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        )
    }
}
