import DeckhandCore
import DeckhandTesting
import Foundation
import RuntimeManager

/// Provisioning through a runtime worker, measured from publishing `provision` to receiving `sandbox_ready`:
/// cold (a sandbox created for the request) on each backend, and warm (claimed from the pool).
enum RuntimeBenchmark {
    static func run(coldProcess: Int, coldDocker: Int, warm: Int, pool: Int) async throws -> [BenchmarkResult] {
        try await TestRuntime.with { runtime in
            var results: [BenchmarkResult] = []

            let processWorker = try runtime.makeWorker()
            try await running(processWorker) {
                let cold = try await provisionTimes(runtime, count: coldProcess, backend: .process)
                results += percentiles("runtime.cold.process", cold, p99Target: nil)
            }

            let docker = TestDocker(client: runtime.http)
            if coldDocker > 0, (try? await docker.imageExists(TestRuntime.sandboxImage)) == true {
                let dockerWorker = try runtime.makeWorker(backends: [.docker])
                try await running(dockerWorker) {
                    let cold = try await provisionTimes(runtime, count: coldDocker, backend: .docker)
                    results += percentiles("runtime.cold.docker", cold, p99Target: nil)
                }
            } else if coldDocker > 0 {
                print(
                    "docker: skipped (no engine at \(TestEnvironment.dockerSocket) or no image \(TestRuntime.sandboxImage))"
                )
            }

            let settings = TestRuntime.settings {
                $0.warmPool = [.init(backend: .process, image: RuntimeSettings.processImage, size: pool)]
            }
            let warmWorker = try runtime.makeWorker(settings: settings)
            try await running(warmWorker) {
                var times: [Duration] = []
                for _ in 0..<warm {
                    // Measure claims only: wait until the pool is full again between them.
                    try await runtime.eventually("the pool is full", timeout: .seconds(60)) {
                        try await runtime.store.all().filter { $0.status == .warm }.count >= pool
                    }
                    let conversation = UUID()
                    let start = ContinuousClock.now
                    try await runtime.provision(conversation)
                    guard try await runtime.reply(for: conversation).ready != nil else {
                        throw DeckhandError(.internalError, "a warm provision failed")
                    }
                    times.append(ContinuousClock.now - start)
                    try await runtime.send(.destroy, sandbox: try await sandboxID(runtime, conversation))
                }
                results += percentiles("runtime.warm.process", times, p99Target: 20)
            }
            return results
        }
    }

    static func provisionTimes(
        _ runtime: TestRuntime,
        count: Int,
        backend: RuntimeSettings.Backend
    ) async throws
        -> [Duration]
    {
        var times: [Duration] = []
        for _ in 0..<count {
            let conversation = UUID()
            let start = ContinuousClock.now
            try await runtime.provision(conversation, backend: backend)
            let reply = try await runtime.reply(for: conversation)
            guard reply.ready != nil else { throw DeckhandError(.internalError, "a provision failed: \(reply)") }
            times.append(ContinuousClock.now - start)
            try await runtime.send(.destroy, sandbox: try await sandboxID(runtime, conversation))
        }
        return times
    }

    static func sandboxID(_ runtime: TestRuntime, _ conversation: UUID) async throws -> UUID {
        guard let record = try await runtime.store.liveSandbox(conversation: conversation) else {
            throw DeckhandError(.internalError, "no sandbox recorded for \(conversation)")
        }
        return record.id
    }

    static func percentiles(_ name: String, _ times: [Duration], p99Target: Double?) -> [BenchmarkResult] {
        let sorted = times.map(\.milliseconds).sorted()
        guard !sorted.isEmpty else { return [] }
        func at(_ fraction: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))] }
        return [
            BenchmarkResult(name: name + ".p50", value: at(0.5), unit: "ms", target: nil, lowerIsBetter: true),
            BenchmarkResult(name: name + ".p99", value: at(0.99), unit: "ms", target: p99Target, lowerIsBetter: true),
        ]
    }
}
