import Crypto
import DeckhandCore
import Foundation
import HTTPTypes
import Postgres
import Synchronization

/// Who a request is: a user, and the key it presented (none in single-user mode).
public struct Principal: Sendable, Equatable {
    public var userID: UUID
    public var keyID: UUID?

    public init(userID: UUID, keyID: UUID? = nil) {
        self.userID = userID
        self.keyID = keyID
    }
}

/// API keys in `api_keys`: created for a user (shown once), listed, revoked, and checked.
///
/// A key is `dh_` and 64 hex digits of randomness. Only its SHA-256 is stored, beside its first 12 characters
/// (`key_prefix`, not secret) by which a presented key is found; the hashes are then compared in constant time.
public struct APIKeyStore: Sendable {
    public let postgres: PostgresClient

    public init(postgres: PostgresClient) {
        self.postgres = postgres
    }

    static let prefixLength = 12

    /// A new key, as printed once by `deckhand keys create`.
    public struct CreatedKey: Sendable {
        public var id: UUID
        public var userID: UUID
        public var key: String
        public var prefix: String
    }

    /// A key as `deckhand keys list` shows it (never the key itself).
    public struct KeyInfo: Sendable {
        public var id: UUID
        public var user: String
        public var name: String
        public var prefix: String
        public var createdAt: String
        public var lastUsedAt: String?
        public var revoked: Bool
    }

    /// The id of the user called `name`, created if missing.
    public func ensureUser(named name: String) async throws -> UUID {
        let rows = try await postgres.query(
            """
            WITH inserted AS (
                INSERT INTO users (id, name, display_name) VALUES ($1, $2, $2) ON CONFLICT (name) DO NOTHING RETURNING id
            )
            SELECT id FROM inserted UNION ALL SELECT id FROM users WHERE name = $2
            """,
            [.uuid(UUID()), .text(name)]
        )
        guard let id = try rows.first?.decode(UUID.self, "id") else {
            throw DeckhandError(.internalError, "user \(name) could not be created")
        }
        return id
    }

    /// Creates a key for the user `user` (created if missing) and returns it: the only time it is seen.
    public func create(user: String, name: String = "") async throws -> CreatedKey {
        try await create(userID: try await ensureUser(named: user), name: name)
    }

    /// Creates a key for the existing user `userID` and returns it.
    public func create(userID: UUID, name: String = "") async throws -> CreatedKey {
        var random = SystemRandomNumberGenerator()
        let key =
            "dh_" + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &random)) }.joined()
        let prefix = String(key.prefix(Self.prefixLength))
        let id = UUID()
        try await postgres.execute(
            "INSERT INTO api_keys (id, user_id, name, key_hash, key_prefix) VALUES ($1, $2, $3, $4, $5)",
            [.uuid(id), .uuid(userID), .text(name), .bytea(Self.hash(key)), .text(prefix)]
        )
        return CreatedKey(id: id, userID: userID, key: key, prefix: prefix)
    }

    /// The keys of `user` (every user's when nil), newest first.
    public func list(user: String? = nil) async throws -> [KeyInfo] {
        let rows = try await postgres.query(
            """
            SELECT k.id, u.name AS user_name, k.name, k.key_prefix, k.created_at::text AS created,
                k.last_used_at::text AS last_used, k.revoked_at IS NOT NULL AS revoked
            FROM api_keys k JOIN users u ON u.id = k.user_id
            WHERE $1::text IS NULL OR u.name = $1
            ORDER BY k.created_at DESC
            """,
            [user.map(PostgresValue.text) ?? .null]
        )
        return try rows.map { row in
            KeyInfo(
                id: try row.decode(UUID.self, "id"),
                user: try row.decode(String?.self, "user_name") ?? "",
                name: try row.decode(String.self, "name"),
                prefix: try row.decode(String.self, "key_prefix"),
                createdAt: try row.decode(String.self, "created"),
                lastUsedAt: try row.decode(String?.self, "last_used"),
                revoked: try row.decode(Bool.self, "revoked")
            )
        }
    }

    /// Revokes the key whose id or prefix is `reference`; false when no live key matches.
    public func revoke(_ reference: String) async throws -> Bool {
        let id = UUID(uuidString: reference)
        let count = try await postgres.execute(
            """
            UPDATE api_keys SET revoked_at = now()
            WHERE revoked_at IS NULL AND (id = $1 OR key_prefix = $2)
            """,
            [id.map(PostgresValue.uuid) ?? .null, .text(reference)]
        )
        return count > 0
    }

    /// The principal of `key`, or nil when it is unknown, malformed or revoked. Records when it was used.
    public func authenticate(_ key: String) async throws -> Principal? {
        guard Self.isWellFormed(key) else { return nil }
        return try await authenticate(key, hash: Self.hash(key))
    }

    /// ``authenticate(_:)`` of a well-formed key whose hash is `presented`.
    func authenticate(_ key: String, hash presented: [UInt8]) async throws -> Principal? {
        let rows = try await postgres.query(
            "SELECT id, user_id, key_hash FROM api_keys WHERE key_prefix = $1 AND revoked_at IS NULL",
            [.text(String(key.prefix(Self.prefixLength)))]
        )
        for row in rows {
            let stored = try row.decode([UInt8].self, "key_hash")
            guard constantTimeEquals(stored, presented) else { continue }
            let id = try row.decode(UUID.self, "id")
            try await postgres.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", [.uuid(id)])
            return Principal(userID: try row.decode(UUID.self, "user_id"), keyID: id)
        }
        return nil
    }

    static func isWellFormed(_ key: String) -> Bool {
        key.utf8.count == 67 && key.hasPrefix("dh_")
            && key.utf8.dropFirst(3).allSatisfy { byte in
                (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
            }
    }

    /// SHA-256 of the key's bytes.
    static func hash(_ key: String) -> [UInt8] { Array(SHA256.hash(data: Array(key.utf8))) }
}

/// Checks presented keys, trusting an answer for `ttl` so that a busy client costs no database round trip per
/// request, and a client repeating a wrong key none either. Keyed by the key's hash; bounded (emptied when
/// full). A client address that presents more than `failureLimit` wrong keys in a minute gets 429 for the
/// rest of that minute for every key the cache does not already trust: guessing is slow and costs the
/// database nothing.
public final class Authenticator: Sendable {
    let store: APIKeyStore
    let ttl: Duration
    let failureLimit: Int
    private let cache: BoundedCache<[UInt8], Checked>
    private let failures = Mutex<[String: (since: ContinuousClock.Instant, count: Int)]>([:])

    private struct Checked: Sendable {
        /// Nil: not a live key.
        var principal: Principal?
        var until: ContinuousClock.Instant
    }

    static let failureWindow: Duration = .seconds(60)

    public init(store: APIKeyStore, ttl: Duration, failureLimit: Int = 30, capacity: Int = 10_000) {
        self.store = store
        self.ttl = ttl
        self.failureLimit = failureLimit
        self.cache = BoundedCache(capacity: capacity)
    }

    /// The principal of `key`, or nil when it is not a live key; a 429 when `address` is over its limit of
    /// wrong keys and this one is not known to be good.
    public func principal(for key: String, from address: String? = nil) async throws -> Principal? {
        let hash = APIKeyStore.hash(key)
        let now = ContinuousClock.now
        if let cached = cache[hash], cached.until > now, let principal = cached.principal { return principal }
        if let address, failureLimit > 0 { try refuseIfOverLimit(address, now: now) }
        let principal: Principal?
        if let cached = cache[hash], cached.until > now {
            principal = nil
        } else if APIKeyStore.isWellFormed(key) {
            principal = try await store.authenticate(key, hash: hash)
            cache.set(Checked(principal: principal, until: now.advanced(by: ttl)), for: hash)
        } else {
            principal = nil
        }
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
