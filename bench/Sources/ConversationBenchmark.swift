import ConversationWorker
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Metrics
import Postgres
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The conversation workers: the cost of a step apart from the model and the sandbox, steps per second
/// with a slow model as worker processes are added, and an idle worker's memory.
enum ConversationBenchmark {
    static let timers = CapturedTimers()

    static func run(
        steps: Int,
        length: Int,
        overheadOnly: Bool,
        throughputConversations: Int,
        throughputSteps: Int,
        prefetch: Int
    ) async throws
        -> [BenchmarkResult]
    {
        MetricsSystem.bootstrap(timers)
        var results = try await overhead(steps: steps, perConversation: length)
        if overheadOnly { return results }
        var rates: [Int: Double] = [:]
        for workers in [1, 2, 4] {
            let rate = try await throughput(
                workers: workers,
                conversations: throughputConversations,
                steps: throughputSteps,
                prefetch: prefetch
            )
            rates[workers] = rate
            let linear = (rates[1] ?? rate) * Double(workers)
            results.append(
                BenchmarkResult(
                    name: "conversation.steps_per_s.\(workers)_workers",
                    value: rate,
                    unit: "steps/s",
                    target: workers == 1 ? nil : 0.9 * linear
                )
            )
        }
        results += try await idleMemory()
        return results
    }

    /// One worker in this process, a zero-latency model, a warm process sandbox; conversations one after the
    /// other, each running a no-op command `perConversation` times (each different: the same one four times over is stuck detection). The step timers come from the worker's `deckhand_step_seconds`.
    static func overhead(steps: Int, perConversation: Int) async throws -> [BenchmarkResult] {
        try await TestConversations.with { bed in
            try await running(try bed.makeRuntimeWorker(warm: 2), bed.makeWorker()) {
                var done = 0
                while done < steps {
                    let count = min(perConversation, steps - done)
                    var script = (0..<count).map { FakeLLM.Step.bash(": step-\($0)") }
                    script.append(.finish("done"))
                    let id = try await bed.start(script: FakeLLM.Script(steps: script), maxIterations: 1000)
                    let record = try await bed.waitFor(id, [.finished, .error], timeout: .seconds(300))
                    guard record.agentState == .finished else {
                        throw DeckhandError(
                            .internalError,
                            "a benchmark conversation failed: \(record.lastError ?? "")"
                        )
                    }
                    done += count
                }
            }
            var results: [BenchmarkResult] = []
            let phases = StepMetrics.Phase.allCases.map { "phase." + $0.rawValue }
            for part in ["overhead", "total", "llm", "sandbox"] + phases {
                let values = timers.values(part: part).sorted()
                guard !values.isEmpty else { continue }
                results.append(
                    BenchmarkResult(
                        name: "conversation.step.\(part).p50",
                        value: SandboxBenchmark.percentile(values, 0.5),
                        unit: "ms",
                        target: part == "overhead" ? 5 : nil,
                        lowerIsBetter: true
                    )
                )
                results.append(
                    BenchmarkResult(
                        name: "conversation.step.\(part).p99",
                        value: SandboxBenchmark.percentile(values, 0.99),
                        unit: "ms",
                        target: nil,
                        lowerIsBetter: true
                    )
                )
            }
            return results
        }
    }

    /// `workers` worker processes with `prefetch` steps each, a model answering in 200 ms, `conversations`
    /// conversations of `steps` steps at once; the rate at which model calls were stored.
    static func throughput(workers: Int, conversations: Int, steps: Int, prefetch: Int) async throws -> Double {
        try await TestConversations.with(latency: .milliseconds(200)) { bed in
            let processes = try (0..<workers).map { index in
                try bed.launchWorkerProcess(
                    name: "bench-\(index)",
                    environment: ["DECKHAND_AMQP_PREFETCH": "\(prefetch)"]
                )
            }
            defer { for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
            return try await running(try bed.makeRuntimeWorker(warm: min(conversations, 8))) {
                var ids: [UUID] = []
                for _ in 0..<conversations {
                    var script = (0..<steps).map { FakeLLM.Step.bash(": step-\($0)") }
                    script.append(.finish("done"))
                    ids.append(try await bed.start(script: FakeLLM.Script(steps: script), maxIterations: 1000))
                }
                for id in ids {
                    let record = try await bed.waitFor(id, [.finished, .error], timeout: .seconds(600))
                    guard record.agentState == .finished else {
                        throw DeckhandError(
                            .internalError,
                            "a benchmark conversation failed: \(record.lastError ?? "")"
                        )
                    }
                }
                let row = try await bed.runtime.postgres.query(
                    """
                    SELECT count(*) AS calls, extract(epoch FROM max(created_at) - min(created_at)) AS seconds
                    FROM llm_calls
                    """
                )[0]
                let calls = try row.decode(Int.self, "calls")
                let seconds = try row.decode(Double.self, "seconds")
                return Double(calls - 1) / max(seconds, 0.001)
            }
        }
    }

    /// A `deckhand conversation-worker` process that has started consuming and has nothing to do.
    static func idleMemory() async throws -> [BenchmarkResult] {
        try await TestConversations.with { bed in
            let process = try bed.launchWorkerProcess(name: "idle", environment: ["DECKHAND_LOG_LEVEL": "info"])
            defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
            let deadline = ContinuousClock.now + .seconds(30)
            while !bed.workerProcessLog("idle").contains("conversation worker consuming") {
                guard ContinuousClock.now < deadline, process.isRunning else {
                    throw DeckhandError(.internalError, "the worker did not start: \(bed.workerProcessLog("idle"))")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Task.sleep(for: .seconds(2))
            let rss = SandboxBenchmark.residentMemory(pid: process.processIdentifier)
            let anonymous = SandboxBenchmark.residentMemory(pid: process.processIdentifier, field: "RssAnon:")
            return [
                BenchmarkResult(
                    name: "conversation.worker.idle_rss",
                    value: Double(rss) / 1_048_576,
                    unit: "MiB",
                    target: 30,
                    lowerIsBetter: true
                ),
                BenchmarkResult(
                    name: "conversation.worker.idle_rss_anonymous",
                    value: Double(anonymous) / 1_048_576,
                    unit: "MiB",
                    target: nil,
                    lowerIsBetter: true
                ),
            ]
        }
    }
}

/// A metrics backend that keeps the values of `deckhand_step_seconds`, by part, in milliseconds.
final class CapturedTimers: MetricsFactory, Sendable {
    private let recorded = Mutex<[String: [Double]]>([:])

    func values(part: String) -> [Double] { recorded.withLock { $0[part] ?? [] } }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        switch label {
        case StepMetrics.label: StepTimer(part: dimensions.first { $0.0 == "part" }?.1, sink: self)
        case StepMetrics.phaseLabel:
            StepTimer(part: dimensions.first { $0.0 == "phase" }.map { "phase." + $0.1 }, sink: self)
        default: StepTimer(part: nil, sink: self)
        }
    }

    func add(_ part: String, _ milliseconds: Double) {
        recorded.withLock { $0[part, default: []].append(milliseconds) }
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        NOOPMetricsHandler.instance
    }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        NOOPMetricsHandler.instance
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        NOOPMetricsHandler.instance
    }
    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}

    final class StepTimer: TimerHandler, Sendable {
        let part: String?
        let sink: CapturedTimers
        init(part: String?, sink: CapturedTimers) {
            self.part = part
            self.sink = sink
        }
        func recordNanoseconds(_ duration: Int64) {
            if let part { sink.add(part, Double(duration) / 1_000_000) }
        }
    }
}
