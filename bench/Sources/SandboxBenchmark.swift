import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient

/// deckhand-sandbox as a process: time to `/alive`, idle memory, `echo hi` round trips, concurrent reads.
enum SandboxBenchmark {
    static func run(binary: String, calls: Int, concurrentReads: Int) async throws -> [BenchmarkResult] {
        let workspace = FileManager.default.temporaryDirectory.appendingPathComponent(
            "deckhand-bench-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: workspace) }
        let port = try TestEnvironment.freePort()
        let key = UUID().uuidString
        let client = try HTTPClient()
        defer { Task { await client.shutdown() } }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--port", "\(port)", "--working-dir", workspace, "--log-level", "warning"]
        process.environment = ProcessInfo.processInfo.environment.merging(["SESSION_API_KEY": key]) { $1 }
        let started = ContinuousClock.now
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let base = "http://127.0.0.1:\(port)"
        var ready: Duration?
        while ContinuousClock.now - started < .seconds(10) {
            if let response = try? await client.execute(HTTPRequest(url: base + "/alive", connectTimeout: .seconds(1))),
                String(decoding: response.body, as: UTF8.self).contains("\"ok\"")
            {
                ready = ContinuousClock.now - started
                break
            }
            try await Task.sleep(for: .milliseconds(1))
        }
        guard let ready else { throw DeckhandError(.timeout, "deckhand-sandbox did not answer /alive within 10 s") }
        try await Task.sleep(for: .milliseconds(500))
        let idleRSS = residentMemory(pid: process.processIdentifier)
        let idleAnonymous = residentMemory(pid: process.processIdentifier, field: "RssAnon:")

        let headers: HTTPHeaders = ["X-Session-API-Key": key, "Content-Type": "application/json"]
        func action(_ json: String) -> HTTPRequest {
            HTTPRequest(method: .post, url: base + "/execute_action", headers: headers, body: Array(json.utf8))
        }
        let echo = action(
            #"{"action":{"action":"run","args":{"command":"echo hi","is_input":false,"blocking":false}}}"#
        )
        var latencies: [Double] = []
        for _ in 0..<calls {
            let start = ContinuousClock.now
            let response = try await client.execute(echo)
            latencies.append((ContinuousClock.now - start).milliseconds)
            guard response.status == 200, String(decoding: response.body, as: UTF8.self).contains("\"hi") else {
                throw DeckhandError(.protocolViolation, "echo hi answered \(response.status): \(response.text)")
            }
        }
        latencies.sort()

        let file = workspace + "/read-me.txt"
        try String(repeating: "a line of text to read\n", count: 200).write(
            toFile: file,
            atomically: true,
            encoding: .utf8
        )
        let read = action(#"{"action":{"action":"read","args":{"path":"\#(file)"}}}"#)
        let readStart = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrentReads {
                group.addTask {
                    let response = try await client.execute(read)
                    guard response.status == 200 else {
                        throw DeckhandError(.protocolViolation, "read answered \(response.status)")
                    }
                }
            }
            try await group.waitForAll()
        }
        let readElapsed = (ContinuousClock.now - readStart).milliseconds

        return [
            BenchmarkResult(
                name: "sandbox.start_to_alive",
                value: ready.milliseconds,
                unit: "ms",
                target: 100,
                lowerIsBetter: true
            ),
            BenchmarkResult(
                name: "sandbox.idle_rss",
                value: Double(idleRSS) / 1_048_576,
                unit: "MiB",
                target: 20,
                lowerIsBetter: true
            ),
            BenchmarkResult(
                name: "sandbox.idle_rss_anonymous",
                value: Double(idleAnonymous) / 1_048_576,
                unit: "MiB",
                target: nil
            ),
            BenchmarkResult(
                name: "sandbox.echo.p50",
                value: percentile(latencies, 0.5),
                unit: "ms",
                target: 5,
                lowerIsBetter: true
            ),
            BenchmarkResult(
                name: "sandbox.echo.p99",
                value: percentile(latencies, 0.99),
                unit: "ms",
                target: 20,
                lowerIsBetter: true
            ),
            BenchmarkResult(
                name: "sandbox.read.\(concurrentReads)_concurrent",
                value: readElapsed,
                unit: "ms",
                target: nil
            ),
        ]
    }

    static func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * fraction))]
    }

    /// A resident-memory line of `/proc/<pid>/status` (VmRSS, or RssAnon: the part no other process can
    /// share), in bytes.
    static func residentMemory(pid: Int32, field: String = "VmRSS:") -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix(field) {
            return (Int(line.split(separator: " ")[1]) ?? 0) * 1024
        }
        return 0
    }
}
