/// Exponential back-off with jitter, the one Deckhand waits by between tries (AMQP reconnects, model calls):
/// retry n (counted from 0) waits between half and all of `min(maximum, minimum × 2ⁿ)`.
public struct Backoff: Sendable, Equatable {
    public let minimum: Duration
    public let maximum: Duration
    /// The retries counted by ``next(using:)`` since the last ``reset()``.
    public private(set) var attempt = 0

    public init(minimum: Duration, maximum: Duration) {
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
    }

    /// The wait before retry `retry` (0 for the first).
    public func delay<G: RandomNumberGenerator>(retry: Int, using generator: inout G) -> Duration {
        let exponent = min(max(retry, 0), 30)
        let ceiling = min(maximum, minimum * (1 << exponent))
        return ceiling * Double.random(in: 0.5...1.0, using: &generator)
    }

    /// The wait before the next retry; counts it.
    public mutating func next<G: RandomNumberGenerator>(using generator: inout G) -> Duration {
        defer { attempt += 1 }
        return delay(retry: attempt, using: &generator)
    }

    public mutating func next() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return next(using: &generator)
    }

    /// Starts counting again (the last try succeeded).
    public mutating func reset() { attempt = 0 }
}
