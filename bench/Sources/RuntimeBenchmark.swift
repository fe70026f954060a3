import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import RuntimeManager

/// Provisioning through a runtime worker, measured from publishing `provision` to receiving `sandbox_ready`:
/// cold (a sandbox created for the request) on each backend, and warm (claimed from the pool).
enum RuntimeBenchmark {
    static func run(coldProcess: Int, coldDocker: Int, warm: Int, pool: Int) async throws -> [BenchmarkResult] {
        try await TestRuntime.with { runtime in
            var results: [BenchmarkResult] = []

            // Process sandboxes confined by bubblewrap (the default), then unconfined, for comparison.
            for (isolation, suffix) in [(RuntimeSettings.ProcessIsolation.bwrap, ""), (.none, "-unconfined")] {
                let processWorker = try runtime.makeWorker(
                    settings: TestRuntime.settings { $0.processIsolation = isolation }
                )
                try await running(processWorker) {
                    let cold = try await provisionTimes(runtime, count: coldProcess, backend: .process)
                    results += percentiles("runtime.cold.process" + suffix, cold, p99Target: nil)
                    results.append(try await idleRSS(runtime, name: "runtime.process.rss" + suffix))
                }
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
                    try await eventually("the pool is full", timeout: .seconds(60)) {
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

    /// The resident memory of one idle process sandbox: every process of its tree (bubblewrap's two, the server
    /// and its shell), after one command has run.
    static func idleRSS(_ runtime: TestRuntime, name: String) async throws -> BenchmarkResult {
        let conversation = UUID()
        try await runtime.provision(conversation, backend: .process)
        guard let ready = try await runtime.reply(for: conversation).ready,
            let folder = try await runtime.store.sandbox(id: ready.sandboxID)?.reference
        else { throw DeckhandError(.internalError, "a provision failed") }
        _ = try await runtime.run("true", in: ready)
        let pidText = try String(contentsOfFile: folder + "/pid", encoding: .utf8)
        guard let root = Int32(pidText.split(separator: " ").first ?? "") else {
            throw DeckhandError(.internalError, "no pid in \(folder)/pid")
        }
        var parents: [Int32: [Int32]] = [:]
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = Int32(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = Int32(fields[1]) { parents[parent, default: []].append(pid) }
        }
        var tree = [root]
        var index = 0
        while index < tree.count {
            tree += parents[tree[index]] ?? []
            index += 1
        }
        var kilobytes = 0
        for pid in tree {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
                kilobytes += Int(line.split(whereSeparator: \.isWhitespace).dropFirst().first ?? "") ?? 0
            }
        }
        try await runtime.send(.destroy, sandbox: ready.sandboxID)
        return BenchmarkResult(
            name: name + " (\(tree.count) processes)",
            value: Double(kilobytes) / 1024,
            unit: "MiB",
            target: nil,
            lowerIsBetter: true
        )
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
