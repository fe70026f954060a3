import DeckhandCore
import DeckhandStore
import Foundation
import Synchronization
import Testing

@testable import Gateway

/// The key cache and the wrong-key limit, with a clock the test moves: time is the subject, so no test
/// waits for it.
@Suite struct AuthenticatorTests {
    /// A clock that stands still until the test moves it.
    final class ManualClock: Sendable {
        private let instant = Mutex(ContinuousClock.now)
        var now: ContinuousClock.Instant { instant.withLock { $0 } }
        func advance(by duration: Duration) { instant.withLock { $0 = $0.advanced(by: duration) } }
    }

    /// Keys that can be revoked, counting the look-ups that reach the store.
    final class Keys: APIKeyChecking {
        private let live = Mutex<[String: Principal]>([:])
        private let lookups = Mutex(0)
        var lookupCount: Int { lookups.withLock { $0 } }
        func add(_ key: String, scopes: Set<APIKeyScope> = [.gateway]) -> UUID {
            let user = UUID()
            live.withLock { $0[key] = Principal(userID: user, scopes: scopes) }
            return user
        }
        func revoke(_ key: String) { _ = live.withLock { $0.removeValue(forKey: key) } }
        func authenticate(_ key: String, hash: [UInt8]) async throws -> Principal? {
            lookups.withLock { $0 += 1 }
            return live.withLock { $0[key] }
        }
    }

    static func key(_ digit: Character) -> String { "dh_" + String(repeating: digit, count: 64) }

    @Test func aCheckedKeyIsTrustedForTheTTLAndARevokedOneStopsAfterIt() async throws {
        let (clock, keys) = (ManualClock(), Keys())
        let authenticator = Authenticator(store: keys, ttl: .seconds(10), now: { clock.now })
        let key = Self.key("a")
        let user = keys.add(key)
        #expect(try await authenticator.principal(for: key)?.userID == user)
        keys.revoke(key)
        clock.advance(by: .seconds(9))
        #expect(try await authenticator.principal(for: key)?.userID == user, "trusted within the TTL")
        #expect(keys.lookupCount == 1, "without asking the store again")
        clock.advance(by: .seconds(2))
        #expect(try await authenticator.principal(for: key) == nil, "refused once the TTL has passed")
        #expect(keys.lookupCount == 2)
        // A wrong key is remembered too: repeating it costs the store nothing until the TTL passes.
        #expect(try await authenticator.principal(for: key) == nil)
        #expect(keys.lookupCount == 2)
        // A key that is not well-formed never reaches the store.
        #expect(try await authenticator.principal(for: "dh_short") == nil)
        #expect(keys.lookupCount == 2)
    }

    /// A key opens only the API of its scope: elsewhere it is a wrong key (and counts as one).
    @Test func aKeyOpensOnlyItsOwnAPI() async throws {
        let keys = Keys()
        let gateway = Authenticator(store: keys, ttl: .seconds(10), failureLimit: 1)
        let runtimeAPI = Authenticator(store: keys, ttl: .seconds(10), failureLimit: 1, scope: .runtimeAPI)
        let (userKey, providerKey) = (Self.key("a"), Self.key("b"))
        let user = keys.add(userKey)
        let provider = keys.add(providerKey, scopes: [.runtimeAPI])
        #expect(try await gateway.principal(for: userKey)?.userID == user)
        #expect(try await runtimeAPI.principal(for: providerKey)?.userID == provider)
        // Asked again, from the cache too.
        #expect(try await runtimeAPI.principal(for: userKey, from: "198.18.0.9") == nil)
        #expect(try await gateway.principal(for: providerKey) == nil)
        #expect(try await gateway.principal(for: providerKey) == nil)
        await #expect(throws: APIError.self, "the refused key counted as a wrong one") {
            try await runtimeAPI.principal(for: Self.key("c"), from: "198.18.0.9")
        }
    }

    /// A key from before scopes (none stored) is a gateway key; a scope this version does not know opens nothing.
    @Test func scopesAreReadAsStored() {
        #expect(APIKeyScope.parse([]) == [.gateway])
        #expect(APIKeyScope.parse(["runtime_api"]) == [.runtimeAPI])
        #expect(APIKeyScope.parse(["billing"]).isEmpty)
    }

    @Test func wrongKeysFromOneAddressAreLimitedForTheRestOfTheMinute() async throws {
        let (clock, keys) = (ManualClock(), Keys())
        let authenticator = Authenticator(store: keys, ttl: .seconds(120), failureLimit: 3, now: { clock.now })
        let good = Self.key("a")
        _ = keys.add(good)
        // A key trusted before the guessing keeps working through it.
        #expect(try await authenticator.principal(for: good, from: "198.18.0.9") != nil)
        for digit in ["1", "2", "3"] as [Character] {
            #expect(try await authenticator.principal(for: Self.key(digit), from: "198.18.0.9") == nil)
        }
        clock.advance(by: .seconds(20))
        let refused = await #expect(throws: APIError.self) {
            try await authenticator.principal(for: Self.key("4"), from: "198.18.0.9")
        }
        #expect(refused?.code == .authTooManyFailures)
        #expect(refused?.retryAfter == 41, "the 40 s left of the minute, rounded up")
        #expect(try await authenticator.principal(for: good, from: "198.18.0.9") != nil)
        // Another address is not limited; the limited one is again once its minute is over.
        #expect(try await authenticator.principal(for: Self.key("5"), from: "198.18.0.10") == nil)
        clock.advance(by: .seconds(40))
        #expect(try await authenticator.principal(for: Self.key("6"), from: "198.18.0.9") == nil)
    }
}
