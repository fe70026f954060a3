import DeckhandCore
import Foundation
import Postgres

/// A session of `deckhand runtime-api`: the caller's session id, the id that owns its sandboxes, and its sandbox.
///
/// The runtime id the API shows is the sandbox's own id (``publicRuntimeID``): when a session's sandbox is lost
/// and replaced, its runtime id changes, so a client sees a new runtime (with a new, empty workspace), as
/// OpenHands' API shows a new runtime after one is gone.
public struct RuntimeSession: Sendable, Equatable {
    /// The owner of the session's sandboxes (`sandboxes.conversation_id`; the column `runtime_id`), fixed for the
    /// session.
    public var ownerID: UUID
    public var userID: UUID
    public var sessionID: String
    /// The image the caller asked for.
    public var image: String
    public var resourceFactor: Int
    /// The session's sandbox (the runtime workers' row owned by `ownerID`): its live one, else its newest
    /// (lost or failed); nil before its first provision.
    public var sandbox: SandboxRecord?

    /// The runtime id the API shows: the sandbox's id, or the owner's before the session has one.
    public var publicRuntimeID: UUID { sandbox?.id ?? ownerID }

    /// The sandbox, when it still counts (not lost, not failed).
    public var liveSandbox: SandboxRecord? {
        guard let sandbox, sandbox.status != .lost, sandbox.status != .error else { return nil }
        return sandbox
    }

    init(row: PostgresRow, sandbox: SandboxRecord?) throws {
        ownerID = try row.decode(UUID.self, "runtime_id")
        userID = try row.decode(UUID.self, "user_id")
        sessionID = try row.decode(String.self, "session_id")
        image = try row.decode(String.self, "image")
        resourceFactor = try row.decode(Int.self, "resource_factor")
        self.sandbox = sandbox
    }
}

/// `runtime_sessions` (migration 0011) and the sandboxes they own: what `deckhand runtime-api` answers from.
public struct RuntimeSessionStore: Sendable {
    public let postgres: PostgresClient

    public init(postgres: PostgresClient) {
        self.postgres = postgres
    }

    static let columns = "runtime_id, user_id, session_id, image, resource_factor"

    /// The user's session `sessionID`, made (with a new owner id) when it does not exist yet.
    public func open(user: UUID, sessionID: String, image: String, resourceFactor: Int) async throws -> RuntimeSession {
        let rows = try await postgres.query(
            """
            WITH inserted AS (
                INSERT INTO runtime_sessions (runtime_id, user_id, session_id, image, resource_factor)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (user_id, session_id) DO NOTHING
                RETURNING \(Self.columns)
            )
            SELECT \(Self.columns) FROM inserted
            UNION ALL SELECT \(Self.columns) FROM runtime_sessions WHERE user_id = $2 AND session_id = $3
            """,
            [.uuid(UUID()), .uuid(user), .text(sessionID), .text(image), .int(Int64(resourceFactor))]
        )
        guard let row = rows.first else {
            throw DeckhandError(.internalError, "runtime session \(sessionID) could not be made")
        }
        let ownerID = try row.decode(UUID.self, "runtime_id")
        return try RuntimeSession(row: row, sandbox: try await sandboxes(of: [ownerID])[ownerID])
    }

    /// The user's session `sessionID`; nil when it has none of that id.
    public func session(user: UUID, sessionID: String) async throws -> RuntimeSession? {
        try await sessions(
            "SELECT \(Self.columns) FROM runtime_sessions WHERE user_id = $1 AND session_id = $2",
            [.uuid(user), .text(sessionID)]
        ).first
    }

    /// The user's session whose owner id is `ownerID`; nil when the user has none (another user's does not exist).
    public func session(user: UUID, ownerID: UUID) async throws -> RuntimeSession? {
        try await sessions(
            "SELECT \(Self.columns) FROM runtime_sessions WHERE user_id = $1 AND runtime_id = $2",
            [.uuid(user), .uuid(ownerID)]
        ).first
    }

    /// The user's runtime `id` as the API shows it (a sandbox's id, or a session's owner id before it had one):
    /// its session, described with that sandbox (an earlier, lost one included). Nil when the user has none.
    public func runtime(user: UUID, id: UUID) async throws -> RuntimeSession? {
        if let session = try await session(user: user, ownerID: id) { return session }
        let rows = try await postgres.query(
            "SELECT \(SandboxStore.columns) FROM sandboxes WHERE id = $1 AND conversation_id IS NOT NULL",
            [.uuid(id)]
        )
        guard let sandbox = try rows.first.map(SandboxRecord.init), let owner = sandbox.conversationID,
            var session = try await session(user: user, ownerID: owner)
        else { return nil }
        session.sandbox = sandbox
        return session
    }

    /// Every session of the user, oldest first.
    public func sessions(user: UUID) async throws -> [RuntimeSession] {
        try await sessions(
            "SELECT \(Self.columns) FROM runtime_sessions WHERE user_id = $1 ORDER BY created_at, runtime_id",
            [.uuid(user)]
        )
    }

    private func sessions(_ sql: String, _ parameters: [PostgresValue]) async throws -> [RuntimeSession] {
        let rows = try await postgres.query(sql, parameters)
        let ids = try rows.map { try $0.decode(UUID.self, "runtime_id") }
        let sandboxes = try await sandboxes(of: ids)
        return try zip(rows, ids).map { row, id in try RuntimeSession(row: row, sandbox: sandboxes[id]) }
    }

    /// Each runtime's sandbox: its live one, else its newest.
    private func sandboxes(of runtimes: [UUID]) async throws -> [UUID: SandboxRecord] {
        guard !runtimes.isEmpty else { return [:] }
        let rows = try await postgres.query(
            """
            SELECT DISTINCT ON (conversation_id) \(SandboxStore.columns) FROM sandboxes
            WHERE conversation_id::text = ANY(string_to_array($1, ','))
            ORDER BY conversation_id, status IN \(SandboxStore.dead), created_at DESC
            """,
            [.text(runtimes.map { $0.uuidString.lowercased() }.joined(separator: ","))]
        )
        var found: [UUID: SandboxRecord] = [:]
        for record in try rows.map(SandboxRecord.init) {
            if let owner = record.conversationID { found[owner] = record }
        }
        return found
    }

    /// How many of the user's sessions hold a sandbox that runs or is on its way (`starting`, `running`,
    /// `paused`): what `runtime_api.max_live_runtimes` limits.
    public func liveCount(user: UUID) async throws -> Int {
        let rows = try await postgres.query(
            """
            SELECT count(*) FROM runtime_sessions r JOIN sandboxes s ON s.conversation_id = r.runtime_id
            WHERE r.user_id = $1 AND s.status IN ('starting', 'running', 'paused')
            """,
            [.uuid(user)]
        )
        return try rows.first?.decode(Int.self, 0) ?? 0
    }
}
