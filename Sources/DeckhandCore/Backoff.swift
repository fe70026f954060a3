/// Exponential back-off with jitter: attempt n waits between half and all of `min(maximum, minimum × 2ⁿ)`.
struct Backoff: Sendable {
    let minimum: Duration
    let maximum: Duration
    private(set) var attempt = 0

    init(minimum: Duration, maximum: Duration) {
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
    }

    /// The delay before the next attempt; advances the attempt count.
    mutating func next<G: RandomNumberGenerator>(using generator: inout G) -> Duration {
        let exponent = min(attempt, 30)
        attempt += 1
        let ceiling = min(maximum, minimum * (1 << exponent))
        let fraction = Double.random(in: 0.5...1.0, using: &generator)
        return ceiling * fraction
    }

    mutating func next() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return next(using: &generator)
    }

    mutating func reset() { attempt = 0 }
}
