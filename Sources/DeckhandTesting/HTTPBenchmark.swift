import DeckhandCore
import HTTPClient
import Synchronization

/// A throughput and latency benchmark of ``HTTPClient`` against the loopback server.
public enum HTTPBenchmark {
    /// Starts the loopback server and sends `requests` `GET /hello` requests from `concurrency` tasks through
    /// one client (connections kept alive), after a warm-up of one request per task.
    ///
    /// - Returns: requests per second over the whole run, and the median and 99th-percentile latency.
    public static func run(
        concurrency: Int,
        requests: Int
    ) async throws -> (requestsPerSecond: Double, p50Milliseconds: Double, p99Milliseconds: Double) {
        precondition(concurrency > 0 && requests > 0, "concurrency and requests must be positive")
        return try await withLoopbackServer { port in
            let client = try HTTPClient()
            do {
                let request = HTTPRequest(url: "http://127.0.0.1:\(port)/hello", timeout: .seconds(30))
                _ = try await drive(client, request, concurrency: concurrency, requests: concurrency)
                let clock = ContinuousClock()
                let started = clock.now
                var latencies = try await drive(client, request, concurrency: concurrency, requests: requests)
                let elapsed = clock.now - started
                await client.shutdown()
                latencies.sort()
                func percentile(_ fraction: Double) -> Double {
                    let index = min(latencies.count - 1, Int((Double(latencies.count) * fraction).rounded(.down)))
                    return latencies[index].milliseconds
                }
                return (Double(requests) / elapsed.seconds, percentile(0.5), percentile(0.99))
            } catch {
                await client.shutdown()
                throw error
            }
        }
    }

    private final class Counter: Sendable {
        let issued = Atomic<Int>(0)
    }

    /// Sends `requests` copies of `request` from `concurrency` tasks through `client`; fails on any answer but
    /// `expect`. Returns each request's latency.
    public static func drive(
        _ client: HTTPClient,
        _ request: HTTPRequest,
        concurrency: Int,
        requests: Int,
        expect: Int = 200
    ) async throws -> [Duration] {
        let counter = Counter()
        return try await withThrowingTaskGroup(of: [Duration].self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    let clock = ContinuousClock()
                    var latencies: [Duration] = []
                    while counter.issued.wrappingAdd(1, ordering: .relaxed).oldValue < requests {
                        let sent = clock.now
                        let response = try await client.execute(request)
                        guard response.status == expect else {
                            throw DeckhandError(
                                .httpUnexpectedStatus,
                                "benchmark got HTTP \(response.status): \(response.text.prefix(200))"
                            )
                        }
                        latencies.append(clock.now - sent)
                    }
                    return latencies
                }
            }
            var all: [Duration] = []
            all.reserveCapacity(requests)
            for try await latencies in group { all += latencies }
            return all
        }
    }
}
