import Metrics
import Synchronization

/// The timings of one step, for the `deckhand_step_seconds` timers: from the step's message taken to its
/// last observation published (`total`), the parts spent waiting for the model (`llm`) and the sandbox
/// (`sandbox`), and the rest, Deckhand's own work (`overhead`: PostgreSQL, RabbitMQ, JSON).
final class StepTiming: Sendable {
    let started = ContinuousClock.now
    private let waits = Mutex((llm: Duration.zero, sandbox: Duration.zero))

    func addModel(_ duration: Duration) { waits.withLock { $0.llm += duration } }
    func addSandbox(_ duration: Duration) { waits.withLock { $0.sandbox += duration } }

    /// Records the step's timers (once its actions have run).
    func record() {
        let total = ContinuousClock.now - started
        let (llm, sandbox) = waits.withLock { ($0.llm, $0.sandbox) }
        StepMetrics.total.recordNanoseconds(total.nanoseconds)
        StepMetrics.model.recordNanoseconds(llm.nanoseconds)
        StepMetrics.sandbox.recordNanoseconds(sandbox.nanoseconds)
        StepMetrics.overhead.recordNanoseconds((total - llm - sandbox).nanoseconds)
    }
}

/// The conversation workers' metrics (swift-metrics; whatever backend the process bootstrapped).
public enum StepMetrics {
    public static let label = "deckhand_step_seconds"
    static let total = Timer(label: label, dimensions: [("part", "total")])
    static let model = Timer(label: label, dimensions: [("part", "llm")])
    static let sandbox = Timer(label: label, dimensions: [("part", "sandbox")])
    static let overhead = Timer(label: label, dimensions: [("part", "overhead")])
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
