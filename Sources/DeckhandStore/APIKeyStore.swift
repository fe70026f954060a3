import Crypto
import DeckhandCore
import Foundation
import Postgres

/// Who a request is: a user, and the key it presented (none in single-user mode).
public struct Principal: Sendable, Equatable {
    public var userID: UUID
    public var keyID: UUID?
    /// The key's scopes (`api_keys.scopes`): which API it opens.
    public var scopes: Set<APIKeyScope>

    public init(userID: UUID, keyID: UUID? = nil, scopes: Set<APIKeyScope> = [.gateway]) {
        self.userID = userID
        self.keyID = keyID
        self.scopes = scopes
    }
}

/// Which API a key opens. A key opens only its own: a key for `deckhand runtime-api` (a sandbox provider's
/// credential) cannot drive conversations, and a user's gateway key cannot start sandboxes through the Runtime
/// API. Keys from before scopes (an empty `scopes`) are gateway keys.
public enum APIKeyScope: String, Sendable, Hashable, CaseIterable {
    case gateway
    case runtimeAPI = "runtime_api"

    /// The scopes stored in `api_keys.scopes`; unknown names are ignored (a newer Deckhand's scope opens nothing
    /// here).
    public static func parse(_ stored: [String]) -> Set<APIKeyScope> {
        stored.isEmpty ? [.gateway] : Set(stored.compactMap(APIKeyScope.init(rawValue:)))
    }
}

/// API keys in `api_keys`: created for a user (shown once), listed, revoked, and checked.
///
/// A key is `dh_` and 64 hex digits of randomness. Only its SHA-256 is stored, beside its first 12 characters
/// (`key_prefix`, not secret) by which a presented key is found; the hashes are then compared in constant time.
public struct APIKeyStore: APIKeyChecking {
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
        public var scopes: Set<APIKeyScope>
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
    public func create(user: String, name: String = "", scope: APIKeyScope = .gateway) async throws -> CreatedKey {
        try await create(userID: try await ensureUser(named: user), name: name, scope: scope)
    }

    /// Creates a key for the existing user `userID` and returns it.
    public func create(userID: UUID, name: String = "", scope: APIKeyScope = .gateway) async throws -> CreatedKey {
        var random = SystemRandomNumberGenerator()
        let key =
            "dh_" + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &random)) }.joined()
        let prefix = String(key.prefix(Self.prefixLength))
        let id = UUID()
        try await postgres.execute(
            """
            INSERT INTO api_keys (id, user_id, name, key_hash, key_prefix, scopes)
            VALUES ($1, $2, $3, $4, $5, ARRAY[$6])
            """,
            [.uuid(id), .uuid(userID), .text(name), .bytea(Self.hash(key)), .text(prefix), .text(scope.rawValue)]
        )
        return CreatedKey(id: id, userID: userID, key: key, prefix: prefix)
    }

    /// The keys of `user` (every user's when nil), newest first.
    public func list(user: String? = nil) async throws -> [KeyInfo] {
        let rows = try await postgres.query(
            """
            SELECT k.id, u.name AS user_name, k.name, k.key_prefix, k.created_at::text AS created,
                k.last_used_at::text AS last_used, k.revoked_at IS NOT NULL AS revoked,
                array_to_string(k.scopes, ',') AS scopes
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
                revoked: try row.decode(Bool.self, "revoked"),
                scopes: try Self.scopes(row)
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
    public func authenticate(_ key: String, hash presented: [UInt8]) async throws -> Principal? {
        let rows = try await postgres.query(
            """
            SELECT id, user_id, key_hash, array_to_string(scopes, ',') AS scopes FROM api_keys
            WHERE key_prefix = $1 AND revoked_at IS NULL
            """,
            [.text(String(key.prefix(Self.prefixLength)))]
        )
        for row in rows {
            let stored = try row.decode([UInt8].self, "key_hash")
            guard constantTimeEquals(stored, presented) else { continue }
            let id = try row.decode(UUID.self, "id")
            try await postgres.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", [.uuid(id)])
            return Principal(
                userID: try row.decode(UUID.self, "user_id"),
                keyID: id,
                scopes: try Self.scopes(row)
            )
        }
        return nil
    }

    /// Whether `key` has the form of a key: `dh_` and 64 lower-case hex digits.
    public static func isWellFormed(_ key: String) -> Bool {
        key.utf8.count == 67 && key.hasPrefix("dh_")
            && key.utf8.dropFirst(3).allSatisfy { byte in
                (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
            }
    }

    /// A row's `scopes` (selected as `array_to_string(scopes, ',') AS scopes`).
    private static func scopes(_ row: PostgresRow) throws -> Set<APIKeyScope> {
        APIKeyScope.parse(try row.decode(String.self, "scopes").split(separator: ",").map(String.init))
    }

    /// SHA-256 of the key's bytes.
    public static func hash(_ key: String) -> [UInt8] { Array(SHA256.hash(data: Array(key.utf8))) }
}

/// What the gateway's ``Authenticator`` asks of the key store (an in-memory version serves unit tests).
public protocol APIKeyChecking: Sendable {
    /// The principal of a well-formed key whose SHA-256 is `hash`; nil when it is unknown or revoked.
    func authenticate(_ key: String, hash: [UInt8]) async throws -> Principal?
}
