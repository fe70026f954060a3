import Gateway
import Messaging
import Metrics
import Prometheus

/// Sends the process's swift-metrics (the workers' step and model timings) to the registry the gateway's
/// `/metrics` exports, and returns the gateway's metrics over it. Called once, by the command that serves.
///
/// Timers get buckets up to 10 minutes (Prometheus' defaults end at 10 s, and a step with a real model often
/// takes longer: a quantile past the last bucket reads as that bucket's bound), and the time deliveries waited
/// in a queue buckets of its own, from 10 ms to half an hour, so an alert on a wait of minutes can fire.
func bootstrapMetrics() -> GatewayMetrics {
    let registry = PrometheusCollectorRegistry()
    var factory = PrometheusMetricsFactory(registry: registry)
    factory.defaultDurationHistogramBuckets += [
        .seconds(30), .seconds(60), .seconds(120), .seconds(300), .seconds(600),
    ]
    factory.durationHistogramBuckets[DrainingConsumer.waitLabel] =
        [.milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500)]
        + [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800].map { Duration.seconds($0) }
    MetricsSystem.bootstrap(factory)
    return GatewayMetrics(registry: registry)
}
