import DeckhandCore
import Synchronization

/// A connection owned by whoever holds it: the pool's idle list, or exactly one lease holder.
///
/// `@unchecked Sendable` because `PostgresConnection` is not thread-safe: `ConnectionPool.state` (a `Mutex`)
/// hands each box to one holder at a time, and only that holder touches the connection until it gives it back.
final class ConnectionBox: @unchecked Sendable {
    let connection: PostgresConnection
    init(_ connection: PostgresConnection) { self.connection = connection }
}

/// What `ConnectionPool.acquire` grants: an idle connection, or a slot in which to open a new one.
enum PoolLease: Sendable {
    case idle(ConnectionBox)
    case create
}

/// The bookkeeping of the connection pool: at most `maximum` connections, created lazily, FIFO waiters with a
/// timeout. It does no I/O; its callers open and close connections on the thread pool.
final class ConnectionPool: Sendable {
    private struct Waiter {
        var id: Int
        var continuation: CheckedContinuation<PoolLease, any Error>
    }

    private struct State {
        var idle: [ConnectionBox] = []
        /// Connections that exist or are being opened (idle + leased + opening).
        var open = 0
        var waiters: [Waiter] = []
        var timers: [Int: Task<Void, Never>] = [:]
        var nextID = 0
        var closed = false
        /// Acquisitions that had to wait for a connection, since the pool was made.
        var waits = 0
    }

    let maximum: Int
    private let state = Mutex(State())

    init(maximum: Int) {
        self.maximum = max(1, maximum)
    }

    /// Waits (FIFO) until a connection or a slot is free, for at most `timeout`.
    func acquire(timeout: Duration) async throws -> PoolLease {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<PoolLease, any Error>) in
                let cancelled = Task.isCancelled
                let immediate: Result<PoolLease, any Error>? = state.withLock { state in
                    if state.closed { return .failure(Self.closedError()) }
                    if cancelled { return .failure(DeckhandError(.cancelled, "waiting for a PostgreSQL connection")) }
                    if let box = state.idle.popLast() { return .success(.idle(box)) }
                    if state.open < self.maximum {
                        state.open += 1
                        return .success(.create)
                    }
                    state.waiters.append(Waiter(id: id, continuation: continuation))
                    state.waits += 1
                    return nil
                }
                if let immediate {
                    continuation.resume(with: immediate)
                    return
                }
                let poolSize = self.maximum
                let timer = Task {
                    try? await Task.sleep(for: timeout)
                    guard !Task.isCancelled else { return }
                    self.fail(
                        waiter: id,
                        DeckhandError(
                            .postgresPoolTimeout,
                            "no PostgreSQL connection became free within the acquire timeout of \(timeout) "
                                + "(pool size \(poolSize))"
                        )
                    )
                }
                let orphan = state.withLock { state -> Bool in
                    guard state.waiters.contains(where: { $0.id == id }) else { return true }
                    state.timers[id] = timer
                    return false
                }
                if orphan { timer.cancel() }
            }
        } onCancel: {
            self.fail(waiter: id, DeckhandError(.cancelled, "waiting for a PostgreSQL connection was cancelled"))
        }
    }

    /// Gives back a healthy connection: to the first waiter, or to the idle list. Returns the box when the pool
    /// is closed, for the caller to close.
    func release(_ box: ConnectionBox) -> ConnectionBox? {
        let (waiter, timer, rejected) = state.withLock { state -> (Waiter?, Task<Void, Never>?, ConnectionBox?) in
            if state.closed {
                state.open -= 1
                return (nil, nil, box)
            }
            if !state.waiters.isEmpty {
                let waiter = state.waiters.removeFirst()
                return (waiter, state.timers.removeValue(forKey: waiter.id), nil)
            }
            state.idle.append(box)
            return (nil, nil, nil)
        }
        timer?.cancel()
        waiter?.continuation.resume(returning: .idle(box))
        return rejected
    }

    /// Frees the slot of a connection that was closed or could not be opened; the first waiter may open one.
    func discard() {
        let (waiter, timer) = state.withLock { state -> (Waiter?, Task<Void, Never>?) in
            state.open -= 1
            guard !state.closed, !state.waiters.isEmpty else { return (nil, nil) }
            let waiter = state.waiters.removeFirst()
            state.open += 1
            return (waiter, state.timers.removeValue(forKey: waiter.id))
        }
        timer?.cancel()
        waiter?.continuation.resume(returning: .create)
    }

    /// Gives back a lease that was never used.
    func giveBack(_ lease: PoolLease) -> ConnectionBox? {
        switch lease {
        case .idle(let box): return release(box)
        case .create:
            discard()
            return nil
        }
    }

    /// Refuses new acquires, fails the waiters, and returns the idle connections for the caller to close.
    func close() -> [ConnectionBox] {
        let (idle, waiters, timers) = state.withLock { state in
            state.closed = true
            let result = (state.idle, state.waiters, Array(state.timers.values))
            state.open -= state.idle.count
            state.idle = []
            state.waiters = []
            state.timers = [:]
            return result
        }
        for timer in timers { timer.cancel() }
        for waiter in waiters { waiter.continuation.resume(throwing: Self.closedError()) }
        return idle
    }

    /// The number of connections that exist or are being opened.
    var openCount: Int { state.withLock { $0.open } }
    /// How many callers wait for a connection.
    var waitingCount: Int { state.withLock { $0.waiters.count } }
    /// How many acquisitions had to wait, since the pool was made.
    var waitCount: Int { state.withLock { $0.waits } }

    private func fail(waiter id: Int, _ error: DeckhandError) {
        let (waiter, timer) = state.withLock { state -> (Waiter?, Task<Void, Never>?) in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return (nil, nil) }
            return (state.waiters.remove(at: index), state.timers.removeValue(forKey: id))
        }
        timer?.cancel()
        waiter?.continuation.resume(throwing: error)
    }

    static func closedError() -> DeckhandError {
        DeckhandError(.postgresClosed, "the PostgreSQL client is closed")
    }
}
