import DeckhandCore
import DeckhandStore
import Foundation
import HTTPTypes
import Synchronization

/// Checks presented keys, trusting an answer for `ttl` so that a busy client costs no database round trip per
/// request, and a client repeating a wrong key none either. Keyed by the key's hash; bounded (emptied when
/// full). A client address that presents more than `failureLimit` wrong keys in a minute gets 429 for the
/// rest of that minute for every key the cache does not already trust: guessing is slow and costs the
/// database nothing.
public final class Authenticator: Sendable {
    let store: any APIKeyChecking
    let ttl: Duration
    let failureLimit: Int
    /// The API this authenticator guards: a key of another scope is not a key here.
    let scope: APIKeyScope
    /// The time (the system's monotonic clock; tests give their own to move it).
    let now: @Sendable () -> ContinuousClock.Instant
    private let cache: BoundedCache<[UInt8], Checked>
    private let failures = Mutex<[String: (since: ContinuousClock.Instant, count: Int)]>([:])

    private struct Checked: Sendable {
        /// Nil: not a live key.
        var principal: Principal?
        var until: ContinuousClock.Instant
    }

    static let failureWindow: Duration = .seconds(60)

    public init(
        store: any APIKeyChecking,
        ttl: Duration,
        failureLimit: Int = 30,
        scope: APIKeyScope = .gateway,
        capacity: Int = 10_000,
        now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) {
        self.store = store
        self.ttl = ttl
        self.failureLimit = failureLimit
        self.scope = scope
        self.now = now
        self.cache = BoundedCache(capacity: capacity)
    }

    /// The principal of `key`, or nil when it is not a live key; a 429 when `address` is over its limit of
    /// wrong keys and this one is not known to be good.
    public func principal(for key: String, from address: String? = nil) async throws -> Principal? {
        let hash = APIKeyStore.hash(key)
        let now = self.now()
        if let cached = cache[hash], cached.until > now, let principal = cached.principal,
            principal.scopes.contains(scope)
        {
            return principal
        }
        if let address, failureLimit > 0 { try refuseIfOverLimit(address, now: now) }
        var principal: Principal?
        if let cached = cache[hash], cached.until > now {
            principal = nil
        } else if APIKeyStore.isWellFormed(key) {
            principal = try await store.authenticate(key, hash: hash)
            cache.set(Checked(principal: principal, until: now.advanced(by: ttl)), for: hash)
        } else {
            principal = nil
        }
        if let found = principal, !found.scopes.contains(scope) { principal = nil }
        if principal == nil, let address { countFailure(address, now: now) }
        return principal
    }

    private func refuseIfOverLimit(_ address: String, now: ContinuousClock.Instant) throws {
        let left: Duration? = failures.withLock { failures in
            guard let record = failures[address], now - record.since < Self.failureWindow else { return nil }
            return record.count >= failureLimit ? Self.failureWindow - (now - record.since) : nil
        }
        if let left {
            throw APIError(
                .tooManyRequests,
                .authTooManyFailures,
                "too many wrong keys from this address: try again later",
                retryAfter: max(1, Int(left.components.seconds) + 1)
            )
        }
    }

    private func countFailure(_ address: String, now: ContinuousClock.Instant) {
        failures.withLock { failures in
            if failures.count >= 100_000 { failures.removeAll(keepingCapacity: true) }
            if let record = failures[address], now - record.since < Self.failureWindow {
                failures[address] = (record.since, record.count + 1)
            } else {
                failures[address] = (now, 1)
            }
        }
    }
}
