import AMQP
import DeckhandCore
import Hummingbird
import Logging
import Messaging
import Postgres
import Prometheus
import ServiceLifecycle
import Synchronization

/// A worker role's own HTTP endpoint (`metrics.host`, `metrics.port`), for probes and scrapers:
/// - `GET /alive`: the process answers;
/// - `GET /health`: RabbitMQ and PostgreSQL answer (503 naming the one that does not), as the gateway's;
/// - `GET /metrics`: the process's metrics (the role's own, through swift-metrics, in `registry`) with, read
///   when scraped, the depth and consumer count of the queues the role consumes (and of the dead-letter queue,
///   whose depth is what an alert on dead commands watches)
///   (`deckhand_queue_messages{queue}`, `deckhand_queue_consumers{queue}`), the broker connection
///   (`deckhand_amqp_connected`, `deckhand_amqp_reconnects_total`), the PostgreSQL pool
///   (`deckhand_postgres_pool_connections`, `deckhand_postgres_pool_waiting`, `deckhand_postgres_pool_waits_total`)
///   and what `gauges` adds (the runtime workers' warm pool).
public struct RoleEndpoint: Service {
    /// One gauge value read when scraped: its name, help, labels and value.
    public struct Reading: Sendable {
        public var name: String
        public var help: String
        public var labels: [(String, String)]
        public var value: Double

        public init(name: String, help: String, labels: [(String, String)], value: Double) {
            self.name = name
            self.help = help
            self.labels = labels
            self.value = value
        }
    }

    let settings: MetricsSettings
    let role: String
    let postgres: PostgresClient
    let bus: CommandBus
    let queues: [String]
    let registry: PrometheusCollectorRegistry
    let gauges: @Sendable () async -> [Reading]
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void

    public init(
        settings: MetricsSettings,
        role: String,
        postgres: PostgresClient,
        bus: CommandBus,
        queues: [String],
        registry: PrometheusCollectorRegistry,
        gauges: @escaping @Sendable () async -> [Reading] = { [] },
        logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.settings = settings
        self.role = role
        self.postgres = postgres
        self.bus = bus
        self.queues = queues
        self.registry = registry
        self.gauges = gauges
        self.logger = logger
        self.onRunning = onRunning
    }

    public func run() async throws {
        let (settings, logger, onRunning, role) = (settings, logger, onRunning, role)
        let router = Router()
        router.get("alive") { _, _ in json(["status": "ok", "role": .string(role)]) }
        let exposition = Exposition(
            registry: registry,
            postgres: postgres,
            bus: bus,
            queues: queues,
            gauges: gauges
        )
        router.addProbes(health: Health(postgres: postgres, amqp: bus.connection)) { await exposition.text() }
        let port = settings.port ?? 0
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(settings.host, port: port), serverName: "deckhand-\(role)"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                logger.info(
                    "serving /alive, /health and /metrics",
                    metadata: [LogKey.httpAddress.rawValue: "\(settings.host):\(bound)"]
                )
                await onRunning(bound)
            },
            logger: logger
        )
        try await app.run()
    }
}

/// What `/metrics` of a worker role reads when scraped, into its registry.
struct Exposition: Sendable {
    let registry: PrometheusCollectorRegistry
    let postgres: PostgresClient
    let bus: CommandBus
    let queues: [String]
    let gauges: @Sendable () async -> [RoleEndpoint.Reading]
    /// The totals already added to the counters that mirror a running count (reconnects, pool waits).
    let mirrored = MirroredCounts()

    func text() async -> [UInt8] {
        await GatewayMetrics.readQueues(queues, bus: bus, into: registry, consumers: true)
        let status = bus.connection.status
        gauge("deckhand_amqp_connected", "1 while the broker connection is up.", []).set(
            Double(status.connected ? 1 : 0)
        )
        mirror(
            "deckhand_amqp_reconnects_total",
            "Times the broker connection was established again after it was lost.",
            max(0, status.connections - 1)
        )
        let pool = postgres.poolStatistics
        gauge("deckhand_postgres_pool_connections", "PostgreSQL connections open or opening.", []).set(
            Double(pool.open)
        )
        gauge("deckhand_postgres_pool_waiting", "Callers waiting for a PostgreSQL connection.", [])
            .set(Double(pool.waiting))
        mirror("deckhand_postgres_pool_waits_total", "Acquisitions that had to wait for a connection.", pool.waits)
        for reading in await gauges() {
            gauge(reading.name, reading.help, reading.labels).set(reading.value)
        }
        return registry.emitToBuffer()
    }

    func gauge(_ name: String, _ help: String, _ labels: [(String, String)]) -> Gauge {
        registry.makeGauge(
            descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help),
            labels: labels
        )
    }

    /// A counter that follows a count kept elsewhere: it grows by what the count grew since the last read.
    func mirror(_ name: String, _ help: String, _ total: Int) {
        let grown = mirrored.advance(name, to: total)
        let counter = registry.makeCounter(
            descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help),
            labels: []
        )
        if grown > 0 { counter.increment(by: Int64(grown)) }
    }
}

/// The last totals mirrored into counters.
final class MirroredCounts: Sendable {
    private let totals = Mutex<[String: Int]>([:])

    /// How much `name` grew since the last call (0 the first time it is 0).
    func advance(_ name: String, to total: Int) -> Int {
        totals.withLock { totals in
            defer { totals[name] = total }
            return max(0, total - (totals[name] ?? 0))
        }
    }
}
