import AMQP
import DeckhandCore
import DeckhandTesting
import HTTPClient
import Postgres
import Synchronization
import Testing

/// The promise of all three C-library modules at once: their blocking calls never run on Swift's cooperative
/// pool (two threads on this machine), so an unrelated task stays responsive while slow work is in flight.
/// (The one timing-based test of the suite: the modules' own tests check behaviour, this checks where it runs.)
@Suite struct CooperativePoolProbeTests {
    @Test func anUnrelatedTaskStaysResponsiveWhileSlowQueriesAndRequestsAreInFlight() async throws {
        try await withLoopbackServer { port in
            try await TestPostgres.withSchema(poolSize: 8) { postgres in
                let http = try HTTPClient()
                let amqp = try await TestAMQP.connect(name: TestEnvironment.uniqueName("probe"))
                let probe = LatenessProbe()
                let probing = Task { await probe.run() }

                let started = ContinuousClock.now
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<8 {
                        group.addTask { _ = try await postgres.query("SELECT pg_sleep(1)") }
                        group.addTask {
                            let response = try await http.execute(
                                HTTPRequest(url: "http://127.0.0.1:\(port)/slow?ms=1000")
                            )
                            #expect(response.status == 200)
                        }
                    }
                    // A request nobody answers waits on the AMQP thread, not on the pool.
                    group.addTask {
                        let queue = TestEnvironment.uniqueName("probe")
                        try await amqp.declare(AMQPQueue.exclusive(queue))
                        await #expect(throws: DeckhandError.self) {
                            _ = try await amqp.request(
                                AMQPMessage(json: []),
                                exchange: "",
                                routingKey: queue,
                                timeout: .milliseconds(500)
                            )
                        }
                    }
                    try await group.waitForAll()
                }
                let elapsed = ContinuousClock.now - started
                probe.stop()
                await probing.value
                await http.shutdown()
                await amqp.close()

                let lateness = probe.worst
                print(
                    "cooperative-pool probe: worst lateness \(lateness) while 8 queries and 8 requests of 1 s ran (\(elapsed))"
                )
                // Blocking the cooperative pool's two threads, the 16 one-second calls would take 8 s and keep the
                // probe waiting a second or more at a time. The bounds leave room for a loaded machine (the whole
                // suite runs in parallel on two cores: CI once took 3.004 s, opening the 8 connections included,
                // and a probe woke 0.59 s late) and none for a blocked pool: the elapsed bound sits halfway between
                // 1 s and 8 s, and a probe queued behind 16 one-second calls on two threads wakes seconds late.
                #expect(elapsed < .milliseconds(4500), "the slow calls ran concurrently")
                #expect(lateness < .seconds(1), "worst lateness \(lateness)")
            }
        }
    }
}

/// Sleeps 10 ms in a loop and records how late it wakes up.
private final class LatenessProbe: Sendable {
    private let worstLateness = Mutex<Duration>(.zero)
    private let stopped = Atomic<Bool>(false)

    var worst: Duration { worstLateness.withLock { $0 } }

    func stop() { stopped.store(true, ordering: .relaxed) }

    func run() async {
        while !stopped.load(ordering: .relaxed) {
            let start = ContinuousClock.now
            try? await Task.sleep(for: .milliseconds(10))
            let late = ContinuousClock.now - start - .milliseconds(10)
            worstLateness.withLock { $0 = max($0, late) }
        }
    }
}
