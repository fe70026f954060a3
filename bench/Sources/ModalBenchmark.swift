import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Logging
import RuntimeBackends

/// The `modal` backend's provision latency: create → task → tunnel → `/alive` → first `echo`, then terminate;
/// against the fake Modal server (scripts/modal/fake_modal.py) or, with real settings, Modal itself.
enum ModalBenchmark {
    static func run(sandboxes: Int, live: ModalSettings?) async throws -> [BenchmarkResult] {
        if let live {
            return try await measure(sandboxes: sandboxes, settings: live, name: "modal.live")
        }
        var results: [BenchmarkResult] = []
        try await FakeModal.with { fake in
            results = try await measure(sandboxes: sandboxes, settings: fake.settings, name: "modal.fake")
        }
        return results
    }

    static func measure(sandboxes: Int, settings: ModalSettings, name: String) async throws -> [BenchmarkResult] {
        let http = try HTTPClient()
        let backend = ModalBackend(
            settings: settings,
            deployment: "bench-\(UUID().uuidString.prefix(8).lowercased())",
            http: http,
            logger: Logger(label: "bench.modal")
        )
        var provisions: [Duration] = []
        var commands: [Duration] = []
        for _ in 0..<sandboxes {
            let spec = SandboxSpec(
                id: UUID(),
                image: settings.image ?? "deckhand/sandbox:0.1.0",
                sessionAPIKey: "bench-\(UUID())"
            )
            let clock = ContinuousClock()
            let begin = clock.now
            let reference = try await backend.create(spec)
            let outcome: Result<Void, any Error>
            do {
                let url = try await backend.start(reference, spec: spec).url
                try await eventually(
                    "the sandbox answers /alive",
                    timeout: settings.startTimeout,
                    interval: .milliseconds(50)
                ) {
                    var request = HTTPRequest(url: url + "/alive")
                    request.timeout = .seconds(5)
                    return (try? await http.execute(request))?.status == 200
                }
                let ready = clock.now
                var request = HTTPRequest(method: .post, url: url + "/execute_action")
                request.headers.add(name: "X-Session-API-Key", value: spec.sessionAPIKey)
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = Array(#"{"action":{"action":"run","args":{"command":"echo bench"}}}"#.utf8)
                request.timeout = .seconds(60)
                let answer = try await http.execute(request)
                guard answer.status == 200, answer.text.contains("bench") else {
                    throw DeckhandError(.internalError, "echo answered \(answer.status): \(answer.text.prefix(300))")
                }
                provisions.append(ready - begin)
                commands.append(clock.now - ready)
                outcome = .success(())
            } catch {
                outcome = .failure(error)
            }
            try await backend.destroy(reference)
            try outcome.get()
        }
        await http.shutdown()
        return RuntimeBenchmark.percentiles(name + ".provision_to_alive", provisions, p99Target: nil)
            + RuntimeBenchmark.percentiles(name + ".first_echo", commands, p99Target: nil)
    }
}
