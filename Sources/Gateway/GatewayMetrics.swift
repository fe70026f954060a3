import AMQP
import Messaging
import Prometheus

/// The gateway's metrics, in the registry `/metrics` exports (Prometheus text format):
/// - `deckhand_http_requests_total{route,method,status}` and `deckhand_http_request_duration_seconds{route,method}`
///   (until the response head; a stream's length is not in it);
/// - `deckhand_gateway_commands_total{command,outcome}`: commands published, `confirmed` or `failed`;
/// - `deckhand_gateway_streams{kind}`: open WebSocket and SSE streams; `deckhand_gateway_streams_cut_total`:
///   clients cut off for falling behind;
/// - `deckhand_queue_messages{queue}`: the work queues' depth, read when scraped.
///
/// In `deckhand dev` the workers' metrics (steps, model calls) go to the same registry.
public final class GatewayMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
        .seconds(5), .seconds(10),
    ]

    static var requests: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "deckhand",
            subsystem: "http",
            metricName: "requests",
            unitName: "total",
            helpText: "HTTP requests answered, by route, method and status."
        )
    }
    static var duration: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "deckhand",
            subsystem: "http",
            metricName: "request_duration",
            unitName: "seconds",
            helpText: "Time to answer an HTTP request (to the response head), by route and method."
        )
    }
    static var commands: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "deckhand",
            subsystem: "gateway",
            metricName: "commands",
            unitName: "total",
            helpText: "Conversation commands published with a confirm, by command and outcome."
        )
    }
    static var streams: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "deckhand",
            subsystem: "gateway",
            metricName: "streams",
            unitName: "",
            helpText: "Open live event streams, by kind."
        )
    }
    static var cut: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "deckhand",
            subsystem: "gateway",
            metricName: "streams_cut",
            unitName: "total",
            helpText: "Stream clients cut off for falling more than gateway.stream_buffer events behind."
        )
    }
    static var queueDepth: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "deckhand",
            subsystem: "queue",
            metricName: "messages",
            unitName: "",
            helpText: "Messages ready in a work queue when /metrics was read."
        )
    }

    func request(route: String, method: String, status: Int, duration: Duration) {
        registry.makeCounter(
            descriptor: Self.requests,
            labels: [("route", route), ("method", method), ("status", String(status))]
        )
        .increment()
        registry.makeDurationHistogram(
            descriptor: Self.duration,
            labels: [("route", route), ("method", method)],
            buckets: Self.durationBuckets
        ).record(duration)
    }

    func command(_ command: String, confirmed: Bool) {
        registry.makeCounter(
            descriptor: Self.commands,
            labels: [("command", command), ("outcome", confirmed ? "confirmed" : "failed")]
        ).increment()
    }

    func streamOpened(_ kind: String) {
        registry.makeGauge(descriptor: Self.streams, labels: [("kind", kind)]).increment()
    }
    func streamClosed(_ kind: String) {
        registry.makeGauge(descriptor: Self.streams, labels: [("kind", kind)]).decrement()
    }
    func streamCut() { registry.makeCounter(descriptor: Self.cut, labels: []).increment() }

    static var queueConsumers: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "deckhand",
            subsystem: "queue",
            metricName: "consumers",
            unitName: "",
            helpText: "Consumers of the queue when /metrics was read."
        )
    }

    /// The Prometheus text of every metric, after reading the work queues' depth.
    func exposition(bus: CommandBus) async -> [UInt8] {
        await Self.readQueues(bus.topology.workQueues, bus: bus, into: registry, consumers: false)
        return registry.emitToBuffer()
    }

    /// Reads each queue's depth (`deckhand_queue_messages`) and, with `consumers`, its consumer count
    /// (`deckhand_queue_consumers`) into `registry`; a queue the broker does not answer for within a second is
    /// skipped. The gateway's `/metrics` and every worker role's read them this way.
    static func readQueues(
        _ queues: [String],
        bus: CommandBus,
        into registry: PrometheusCollectorRegistry,
        consumers: Bool
    ) async {
        let connection = bus.consuming
        for queue in queues {
            guard let inspected = try? await withDeadline(.seconds(1), { try await connection.inspect(queue: queue) })
            else { continue }
            registry.makeGauge(descriptor: queueDepth, labels: [("queue", queue)]).set(Double(inspected.messageCount))
            if consumers {
                registry.makeGauge(descriptor: queueConsumers, labels: [("queue", queue)])
                    .set(Double(inspected.consumerCount))
            }
        }
    }
}
