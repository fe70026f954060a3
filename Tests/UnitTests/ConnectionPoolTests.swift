import DeckhandCore
import Synchronization
import Testing

@testable import Postgres

@Suite struct ConnectionPoolTests {
    private func isCreate(_ lease: PoolLease) -> Bool {
        if case .create = lease { return true }
        return false
    }

    @Test func grantsSlotsLazilyUpToTheMaximum() async throws {
        let pool = ConnectionPool(maximum: 2)
        #expect(pool.openCount == 0)
        #expect(isCreate(try await pool.acquire(timeout: .seconds(1))))
        #expect(isCreate(try await pool.acquire(timeout: .seconds(1))))
        #expect(pool.openCount == 2)
        await #expect(throws: DeckhandError.self) { try await pool.acquire(timeout: .milliseconds(50)) }
    }

    @Test func waitersAreServedInOrder() async throws {
        let pool = ConnectionPool(maximum: 1)
        _ = try await pool.acquire(timeout: .seconds(1))
        let order = Recorder()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<3 {
                group.addTask {
                    _ = try await pool.acquire(timeout: .seconds(5))
                    order.values.withLock { $0.append(index) }
                    pool.discard()
                }
                // Each waiter queues before the next one.
                await untilWaiting(pool, index + 1)
            }
            pool.discard()
            try await group.waitForAll()
        }
        #expect(order.values.withLock { $0 } == [0, 1, 2])
        #expect(pool.openCount == 0)
    }

    @Test func aWaiterTimesOutWithAPoolTimeoutNamingTheTimeout() async throws {
        let pool = ConnectionPool(maximum: 1)
        _ = try await pool.acquire(timeout: .seconds(1))
        let start = ContinuousClock.now
        do {
            _ = try await pool.acquire(timeout: .milliseconds(100))
            Issue.record("acquired beyond the maximum")
        } catch let error as DeckhandError {
            #expect(error.code == .postgresPoolTimeout)
            #expect(error.message.contains("0.1 seconds"))
        }
        // Well before the first lease's own second: the waiter's 100 ms fired (loose for a loaded machine).
        #expect(ContinuousClock.now - start < .seconds(5))
        // The timed-out waiter is gone: a freed slot is not handed to it.
        pool.discard()
        #expect(pool.openCount == 0)
    }

    @Test func cancellingAWaiterRemovesIt() async throws {
        let pool = ConnectionPool(maximum: 1)
        _ = try await pool.acquire(timeout: .seconds(1))
        let waiter = Task { try await pool.acquire(timeout: .seconds(30)) }
        await untilWaiting(pool, 1)
        waiter.cancel()
        do {
            _ = try await waiter.value
            Issue.record("a cancelled waiter got a lease")
        } catch let error as DeckhandError {
            #expect(error.code == .cancelled)
        }
        pool.discard()
        #expect(pool.openCount == 0)
    }

    @Test func closingFailsWaitersAndRefusesNewAcquires() async throws {
        let pool = ConnectionPool(maximum: 1)
        _ = try await pool.acquire(timeout: .seconds(1))
        let waiter = Task { try await pool.acquire(timeout: .seconds(30)) }
        await untilWaiting(pool, 1)
        #expect(pool.close().isEmpty)
        await #expect(throws: DeckhandError.self) { try await waiter.value }
        await #expect(throws: DeckhandError.self) { try await pool.acquire(timeout: .seconds(1)) }
    }
}

/// Returns once `count` callers wait in `pool` (it yields; no clock decides).
private func untilWaiting(_ pool: ConnectionPool, _ count: Int) async {
    while pool.waitingCount < count { await Task.yield() }
}

private final class Recorder: Sendable {
    let values = Mutex<[Int]>([])
}
