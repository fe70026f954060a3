import DeckhandCore
import Metrics
import Synchronization

/// The timings of one step, for the `deckhand_step_seconds` timers: from the step's message taken to its end
/// committed and its events published (`total`), the parts spent waiting for the model (`llm`) and the sandbox
/// (`sandbox`), and the rest, Deckhand's own work (`overhead`: PostgreSQL, RabbitMQ, JSON).
final class StepTiming: Sendable {
    let started = ContinuousClock.now
    private let waits = Mutex((llm: Duration.zero, sandbox: Duration.zero))
    private let lastMark = Mutex(ContinuousClock.now)

    /// Records the time since the previous mark (or the start) as `phase` (`deckhand_step_phase_seconds`).
    func mark(_ phase: StepMetrics.Phase) {
        let now = ContinuousClock.now
        let elapsed = lastMark.withLock { last in
            defer { last = now }
            return now - last
        }
        StepMetrics.phases[phase]?.recordNanoseconds(elapsed.nanoseconds)
    }

    func addModel(_ duration: Duration) { waits.withLock { $0.llm += duration } }
    func addSandbox(_ duration: Duration) { waits.withLock { $0.sandbox += duration } }

    /// Records the step's timers (once its end is committed).
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
    /// Where a step's time goes, phase by phase: `lock`, `load`, `decide` (with the model), `act` (with the
    /// sandbox), `finish`.
    public static let phaseLabel = "deckhand_step_phase_seconds"
    static let total = Timer(label: label, dimensions: [("part", "total")])
    static let model = Timer(label: label, dimensions: [("part", "llm")])
    static let sandbox = Timer(label: label, dimensions: [("part", "sandbox")])
    static let overhead = Timer(label: label, dimensions: [("part", "overhead")])

    /// The phases of a step, in order.
    public enum Phase: String, CaseIterable, Sendable {
        case lock, load, decide, act, finish
    }

    /// Model calls by outcome (`ok`, `failed`: the step ended with the model's error) and the tokens they used.
    public static let modelCallsLabel = "deckhand_model_calls_total"
    public static let modelTokensLabel = "deckhand_model_tokens_total"
    static let modelCallsOK = Counter(label: modelCallsLabel, dimensions: [("outcome", "ok")])
    static let modelCallsFailed = Counter(label: modelCallsLabel, dimensions: [("outcome", "failed")])
    static let promptTokens = Counter(label: modelTokensLabel, dimensions: [("kind", "prompt")])
    static let completionTokens = Counter(label: modelTokensLabel, dimensions: [("kind", "completion")])

    /// A model call that answered, and the tokens it used.
    static func modelAnswered(promptTokens: Int, completionTokens: Int) {
        modelCallsOK.increment()
        Self.promptTokens.increment(by: promptTokens)
        Self.completionTokens.increment(by: completionTokens)
    }

    /// A model call that failed (the step ends with the model's error).
    static func modelFailed() { modelCallsFailed.increment() }

    /// What the chain watchdog did (`restarted`, `ended`, `sandbox_requested`, `sandbox_abandoned`): a chain it
    /// had to restart is one whose step was lost, and one it ended is stuck for good — what an alert watches.
    public static let watchdogLabel = "deckhand_chain_watchdog_total"

    static func watchdog(_ outcome: ChainWatchdog.Outcome) {
        let name =
            switch outcome {
            case .restarted: "restarted"
            case .ended: "ended"
            case .sandboxRequested: "sandbox_requested"
            case .sandboxAbandoned: "sandbox_abandoned"
            }
        Counter(label: watchdogLabel, dimensions: [("outcome", name)]).increment()
    }

    static let phases = Dictionary(
        uniqueKeysWithValues: Phase.allCases.map {
            ($0, Timer(label: phaseLabel, dimensions: [("phase", $0.rawValue)]))
        }
    )
}
