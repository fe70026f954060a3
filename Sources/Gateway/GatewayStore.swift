import DeckhandCore
import Foundation
import Postgres
import Synchronization

/// The gateway's statements: conversations as OpenHands' `ConversationInfo`, pages of them and of their
/// events, titles. Every read is scoped to the requesting user: another user's conversation does not exist.
struct GatewayStore: Sendable {
    let postgres: PostgresClient
    /// Conversation → owner, for the commands that need only the ownership check (a conversation never
    /// changes hands, so entries only leave when the map is full).
    let owners = BoundedCache<UUID, UUID>(capacity: 100_000)

    /// `column` (a timestamptz) as UTC ISO 8601 with microseconds, formatted by PostgreSQL.
    static func utc(_ column: String) -> String {
        #"to_char(\#(column) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#
    }

    static let infoColumns = """
        id, title, \(utc("created_at")) AS created, \(utc("updated_at")) AS updated, status, runtime_status,
        selected_repository, selected_branch, git_provider, trigger, agent_state, sandbox_id, llm_model,
        prompt_tokens, completion_tokens, accumulated_cost, created_at::text AS cursor_time
        """

    /// Whether `user` owns `conversation` (a cached answer when it was yes before).
    func owns(_ user: UUID, _ conversation: UUID) async throws -> Bool {
        if let owner = owners[conversation] { return owner == user }
        let rows = try await postgres.query("SELECT user_id FROM conversations WHERE id = $1", [.uuid(conversation)])
        guard let owner = try rows.first?.decode(UUID.self, "user_id") else { return false }
        owners.set(owner, for: conversation)
        return owner == user
    }

    /// `user`'s conversations at work (loading or running) and live sandboxes (starting or running), as
    /// columns `running` and `sandboxes` of a select that binds the user as `$<parameter>`.
    static func usageColumns(user parameter: Int) -> String {
        // Constants of the enum, not input: written into the statement.
        let atWork = AgentStateMachine.atWork.map { "'\($0.rawValue)'" }.sorted().joined(separator: ", ")
        return """
            (SELECT count(*) FROM conversations
             WHERE user_id = $\(parameter) AND agent_state IN (\(atWork))) AS running,
            (SELECT count(*) FROM sandboxes s JOIN conversations o ON o.id = s.conversation_id
             WHERE o.user_id = $\(parameter) AND s.status IN ('starting', 'running')) AS sandboxes
            """
    }

    static func usage(_ row: PostgresRow) throws -> UserLimits.Usage {
        UserLimits.Usage(running: try row.decode(Int.self, "running"), sandboxes: try row.decode(Int.self, "sandboxes"))
    }

    /// What `user` holds now, for the per-user limits.
    func usage(_ user: UUID) async throws -> UserLimits.Usage {
        let rows = try await postgres.query("SELECT \(Self.usageColumns(user: 1))", [.uuid(user)])
        guard let row = rows.first else { return UserLimits.Usage(running: 0, sandboxes: 0) }
        return try Self.usage(row)
    }

    /// Where `conversation` stands before a command that may put it to work: its agent's state, whether it
    /// holds a live sandbox, and what its user holds — one query. Nil when `user` has no such conversation.
    struct Standing {
        var agentState: AgentState?
        var holdsSandbox: Bool
        var usage: UserLimits.Usage
    }

    func standing(_ conversation: UUID, user: UUID) async throws -> Standing? {
        let rows = try await postgres.query(
            """
            SELECT c.agent_state,
                EXISTS (SELECT 1 FROM sandboxes s
                        WHERE s.conversation_id = c.id AND s.status IN ('starting', 'running')) AS holds_sandbox,
                \(Self.usageColumns(user: 2))
            FROM conversations c WHERE c.id = $1 AND c.user_id = $2
            """,
            [.uuid(conversation), .uuid(user)]
        )
        guard let row = rows.first else { return nil }
        owners.set(user, for: conversation)
        return Standing(
            agentState: AgentState(rawValue: try row.decode(String.self, "agent_state")),
            holdsSandbox: try row.decode(Bool.self, "holds_sandbox"),
            usage: try Self.usage(row)
        )
    }

    /// Throws a 404 unless `user` owns `conversation`.
    func requireOwner(_ user: UUID, _ conversation: UUID) async throws {
        guard try await owns(user, conversation) else { throw APIError.conversationNotFound }
    }

    /// The conversation as `ConversationInfo`, or nil when `user` has no such conversation.
    func info(_ conversation: UUID, user: UUID, connections: Int) async throws -> JSONValue? {
        let rows = try await postgres.query(
            "SELECT \(Self.infoColumns) FROM conversations WHERE id = $1 AND user_id = $2",
            [.uuid(conversation), .uuid(user)]
        )
        return try rows.first.map { try Self.info($0, connections: connections) }
    }

    /// One page of `user`'s conversations, newest first, after `cursor`; the next page's cursor if there is one.
    func list(
        user: UUID,
        after cursor: PageCursor?,
        limit: Int,
        connections: (UUID) -> Int
    ) async throws
        -> (results: [JSONValue], next: PageCursor?)
    {
        var sql = "SELECT \(Self.infoColumns) FROM conversations WHERE user_id = $1"
        var bindings: [PostgresValue] = [.uuid(user), .int(Int64(limit + 1))]
        if let cursor {
            sql += " AND (created_at, id) < ($3::timestamptz, $4)"
            bindings += [.text(cursor.createdAt), .uuid(cursor.id)]
        }
        sql += " ORDER BY created_at DESC, id DESC LIMIT $2"
        let rows = try await postgres.query(sql, bindings)
        let page = rows.prefix(limit)
        let results = try page.map { row in
            try Self.info(row, connections: connections(try row.decode(UUID.self, "id")))
        }
        var next: PageCursor?
        if rows.count > limit, let last = page.last {
            next = PageCursor(
                createdAt: try last.decode(String.self, "cursor_time"),
                id: try last.decode(UUID.self, "id")
            )
        }
        return (results, next)
    }

    static func info(_ row: PostgresRow, connections: Int) throws -> JSONValue {
        let id = try row.decode(UUID.self, "id")
        func text(_ column: String) throws -> JSONValue { JSONValue(try row.decode(String?.self, column)) }
        return [
            "conversation_id": .string(id.apiString),
            "title": try text("title"),
            "created_at": try text("created"),
            "last_updated_at": try text("updated"),
            "status": try text("status"),
            "runtime_status": try text("runtime_status"),
            "selected_repository": try text("selected_repository"),
            "selected_branch": try text("selected_branch"),
            "git_provider": try text("git_provider"),
            "trigger": try text("trigger"),
            "url": .string("/api/conversations/\(id.apiString)"),
            "session_api_key": .null,
            "num_connections": .number(Double(connections)),
            "conversation_version": "V0",
            "agent_state": try text("agent_state"),
            "sandbox_id": JSONValue(try row.decode(UUID?.self, "sandbox_id")?.apiString),
            "llm_model": try text("llm_model"),
            "prompt_tokens": .number(Double(try row.decode(Int.self, "prompt_tokens"))),
            "completion_tokens": .number(Double(try row.decode(Int.self, "completion_tokens"))),
            "accumulated_cost": .number(try row.decode(Double.self, "accumulated_cost")),
        ]
    }

    /// Renames `user`'s conversation; false when there is no such conversation.
    func rename(_ conversation: UUID, user: UUID, title: String) async throws -> Bool {
        try await postgres.execute(
            "UPDATE conversations SET title = $3, updated_at = now() WHERE id = $1 AND user_id = $2",
            [.uuid(conversation), .uuid(user), .text(title)]
        ) > 0
    }

    /// Events of a conversation with ids from `start` through `end` (inclusive), in id order (descending when
    /// `reverse`), at most `limit`, with their stored JSON text.
    func events(
        _ conversation: UUID,
        from start: Int,
        through end: Int? = nil,
        reverse: Bool = false,
        limit: Int
    ) async throws
        -> [(id: Int, json: String)]
    {
        var bindings: [PostgresValue] = [.uuid(conversation), .int(Int64(start)), .int(Int64(limit))]
        var sql = "SELECT id, payload::text AS payload FROM events WHERE conversation_id = $1 AND id >= $2"
        if let end {
            sql += " AND id <= $4"
            bindings.append(.int(Int64(end)))
        }
        sql += " ORDER BY id \(reverse ? "DESC" : "ASC") LIMIT $3"
        return try await postgres.query(sql, bindings).map {
            (try $0.decode(Int.self, "id"), try $0.decode(String.self, "payload"))
        }
    }
}

/// The opaque `page_id` of `GET /api/conversations`: where the previous page ended, base64url-encoded.
struct PageCursor: Equatable {
    var createdAt: String
    var id: UUID

    var token: String {
        Data("\(createdAt)|\(id.uuidString)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    init(createdAt: String, id: UUID) {
        self.createdAt = createdAt
        self.id = id
    }

    /// Reads a token; nil when it is not one this gateway wrote.
    init?(token: String) {
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard token.count <= 200, let data = Data(base64Encoded: base64),
            let text = String(data: data, encoding: .utf8)
        else { return nil }
        let parts = text.split(separator: "|")
        guard parts.count == 2, let id = UUID(uuidString: String(parts[1])),
            parts[0].count < 64, parts[0].allSatisfy({ $0.isNumber || " -:.+".contains($0) })
        else { return nil }
        self.createdAt = String(parts[0])
        self.id = id
    }
}

extension UUID {
    /// How the API writes a conversation or sandbox id: lower-case with dashes.
    var apiString: String { uuidString.lowercased() }

    /// Reads an id from a path: a UUID with dashes, or OpenHands' 32 hex digits without them.
    init?(apiString text: String) {
        if text.count == 32, text.allSatisfy(\.isHexDigit) {
            let chars = Array(text)
            let parts = [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(chars[$0]) }
            self.init(uuidString: parts.joined(separator: "-"))
        } else if text.count == 36 {
            self.init(uuidString: text)
        } else {
            return nil
        }
    }
}
