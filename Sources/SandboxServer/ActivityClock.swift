import Synchronization

/// When the sandbox last served an authenticated request (`/server_info`'s `idle_time`).
final class ActivityClock: Sendable {
    private let last = Mutex(ContinuousClock.now)

    func touch() { last.withLock { $0 = .now } }

    var lastActivity: ContinuousClock.Instant { last.withLock { $0 } }
}
