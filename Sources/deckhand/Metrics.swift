import Gateway
import Metrics
import Prometheus

/// Sends the process's swift-metrics (the workers' step and model timings) to the registry the gateway's
/// `/metrics` exports, and returns the gateway's metrics over it. Called once, by the command that serves.
func bootstrapMetrics() -> GatewayMetrics {
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    return GatewayMetrics(registry: registry)
}
