import DeckhandCore
import Foundation

/// How often and how patiently a failed call is tried again: exponential back-off with jitter, capped,
/// where a server's `Retry-After` replaces the computed delay (up to the cap).
public struct RetryPolicy: Sendable, Equatable {
    /// Attempts in all, counting the first.
    public var maxAttempts: Int
    public var minBackoff: Duration
    public var maxBackoff: Duration

    public init(maxAttempts: Int, minBackoff: Duration, maxBackoff: Duration) {
        self.maxAttempts = max(1, maxAttempts)
        self.minBackoff = minBackoff
        self.maxBackoff = max(minBackoff, maxBackoff)
    }

    /// One attempt, no retry.
    public static let none = RetryPolicy(maxAttempts: 1, minBackoff: .zero, maxBackoff: .zero)

    /// Exponential back-off with jitter.
    public static func exponentialJitter(maxAttempts: Int, minBackoff: Duration, maxBackoff: Duration) -> RetryPolicy {
        RetryPolicy(maxAttempts: maxAttempts, minBackoff: minBackoff, maxBackoff: maxBackoff)
    }

    /// The wait before the attempt after `attempt` (1-based): `retryAfter` when the server gave one (up to
    /// `maxBackoff`), else Deckhand's ``Backoff`` between `minBackoff` and `maxBackoff`.
    public func delay(
        afterAttempt attempt: Int,
        retryAfter: Duration?,
        using random: inout some RandomNumberGenerator
    ) -> Duration {
        if let retryAfter { return min(max(retryAfter, .zero), maxBackoff) }
        return Backoff(minimum: minBackoff, maximum: maxBackoff).delay(retry: attempt - 1, using: &random)
    }

    public func delay(afterAttempt attempt: Int, retryAfter: Duration?) -> Duration {
        var random = SystemRandomNumberGenerator()
        return delay(afterAttempt: attempt, retryAfter: retryAfter, using: &random)
    }
}

/// Reads how long a server asks the client to wait: `retry-after-ms` (milliseconds, as OpenAI sends it), or
/// `Retry-After` in seconds or as an HTTP date.
public enum RetryAfter {
    public static func parse(milliseconds: String?, value: String?, now: Date = Date()) -> Duration? {
        if let milliseconds, let number = Double(milliseconds.trimmingCharacters(in: .whitespaces)), number >= 0 {
            return .milliseconds(Int64(number.rounded()))
        }
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Double(value), seconds >= 0, seconds.isFinite {
            return .milliseconds(Int64((seconds * 1000).rounded()))
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        let seconds = max(0, date.timeIntervalSince(now))
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}
