import DeckhandCore
import Metrics

/// The runtime workers' metrics (swift-metrics; whatever backend the process bootstrapped):
/// `deckhand_sandbox_provisions_total{backend,outcome}` — sandboxes handed out to a conversation (`ready`: made
/// or brought back for it, `warm`: claimed from the warm pool) or refused (`failed`).
public enum RuntimeMetrics {
    public static let provisionsLabel = "deckhand_sandbox_provisions_total"

    /// The outcome of one provision.
    public enum Outcome: String, Sendable {
        case ready, warm, failed
    }

    static func provision(_ backend: RuntimeSettings.Backend?, _ outcome: Outcome) {
        Counter(
            label: provisionsLabel,
            dimensions: [("backend", backend?.rawValue ?? "none"), ("outcome", outcome.rawValue)]
        ).increment()
    }
}
