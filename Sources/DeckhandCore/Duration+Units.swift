extension Duration {
    /// The duration in seconds, as a `Double` (for rates, logs and JSON).
    public var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// The duration in milliseconds, as a `Double`.
    public var milliseconds: Double { seconds * 1000 }

    /// Whole milliseconds, truncated.
    public var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Whole nanoseconds, truncated (for swift-metrics timers).
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    /// Whole milliseconds, rounded up, for `poll` and C timeouts (0 or less for a past deadline).
    public var pollMilliseconds: Int32 {
        Int32(clamping: Int64(milliseconds.rounded(.up)))
    }
}
