import DeckhandCore
import Foundation
import Postgres

/// A conversation as the API shows it (OpenHands' `ConversationInfo`, without what only the gateway knows).
public struct ConversationSummary: Sendable, Equatable {
    public var id: UUID
    public var title: String?
    /// UTC ISO 8601 with microseconds.
    public var createdAt: String?
    public var updatedAt: String?
    public var status: String?
    public var runtimeStatus: String?
    public var selectedRepository: String?
    public var selectedBranch: String?
    public var gitProvider: String?
    public var trigger: String?
    public var agentState: String?
    public var sandboxID: UUID?
    public var llmModel: String?
    public var promptTokens: Int
    public var completionTokens: Int
    public var accumulatedCost: Double
    /// Live-stream clients of the conversation on the other gateways (`stream_connections`).
    public var otherConnections: Int
    /// Where a page that ends at this conversation continues.
    public var cursor: PageCursor

    public init(
        id: UUID,
        title: String? = nil,
        createdAt: String? = nil,
        updatedAt: String? = nil,
        status: String? = nil,
        runtimeStatus: String? = nil,
        selectedRepository: String? = nil,
        selectedBranch: String? = nil,
        gitProvider: String? = nil,
        trigger: String? = nil,
        agentState: String? = nil,
        sandboxID: UUID? = nil,
        llmModel: String? = nil,
        promptTokens: Int = 0,
        completionTokens: Int = 0,
        accumulatedCost: Double = 0,
        otherConnections: Int = 0,
        cursor: PageCursor
    ) {
        self.id = id
        self.title = title
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.status = status
        self.runtimeStatus = runtimeStatus
        self.selectedRepository = selectedRepository
        self.selectedBranch = selectedBranch
        self.gitProvider = gitProvider
        self.trigger = trigger
        self.agentState = agentState
        self.sandboxID = sandboxID
        self.llmModel = llmModel
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.accumulatedCost = accumulatedCost
        self.otherConnections = otherConnections
        self.cursor = cursor
    }
}

/// The opaque `page_id` of `GET /api/conversations`: where the previous page ended (the creation time, as
/// PostgreSQL writes it, and the id), base64url-encoded.
public struct PageCursor: Sendable, Equatable {
    public var createdAt: String
    public var id: UUID

    public var token: String {
        Data("\(createdAt)|\(id.uuidString)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public init(createdAt: String, id: UUID) {
        self.createdAt = createdAt
        self.id = id
    }

    /// Reads a token; nil when it is not one this API wrote.
    public init?(token: String) {
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

/// Where a conversation stands before a command that may put it to work: its agent's state, whether it holds
/// a live sandbox, and what its user holds.
public struct ConversationStanding: Sendable, Equatable {
    public var agentState: AgentState?
    public var holdsSandbox: Bool
    public var usage: UserLimits.Usage

    public init(agentState: AgentState?, holdsSandbox: Bool, usage: UserLimits.Usage) {
        self.agentState = agentState
        self.holdsSandbox = holdsSandbox
        self.usage = usage
    }
}

/// What the gateway reads and writes of conversations and their events. Every read that takes a user is
/// scoped to that user: another user's conversation does not exist. ``PostgresConversationRecords`` is the
/// real one; an in-memory one serves the unit tests of the gateway's routes.
public protocol ConversationRecords: Sendable {
    /// Inserts the conversation; false when one with its id exists already.
    func create(_ new: ConversationStore.NewConversation) async throws -> Bool
    /// Deletes the conversation's row (a create whose `start` the broker did not accept).
    func remove(_ conversation: UUID) async throws
    /// The conversation's owner; nil when there is no such conversation.
    func owner(of conversation: UUID) async throws -> UUID?
    /// `user`'s conversations at work (loading or running) and live sandboxes (starting or running).
    func usage(_ user: UUID) async throws -> UserLimits.Usage
    /// Where `user`'s conversation stands; nil when `user` has no such conversation.
    func standing(_ conversation: UUID, user: UUID) async throws -> ConversationStanding?
    /// `user`'s conversation; nil when there is none.
    func summary(_ conversation: UUID, user: UUID) async throws -> ConversationSummary?
    /// Up to `limit` of `user`'s conversations, newest first, after `cursor`; and whether there are more.
    func list(
        user: UUID,
        after cursor: PageCursor?,
        limit: Int
    ) async throws -> (page: [ConversationSummary], more: Bool)
    /// Hides `user`'s conversation from every read (`deleting`) until a worker removes it, or shows it again
    /// (a delete the broker did not accept); false when there is no such conversation.
    func markDeleting(_ conversation: UUID, user: UUID, _ deleting: Bool) async throws -> Bool
    /// Renames `user`'s conversation; false when there is no such conversation.
    func rename(_ conversation: UUID, user: UUID, title: String) async throws -> Bool
    /// Events with ids from `start` through `end` (inclusive), in id order (descending when `reverse`), at most
    /// `limit`, with their stored JSON text.
    func events(
        _ conversation: UUID,
        from start: Int,
        through end: Int?,
        reverse: Bool,
        limit: Int
    ) async throws -> [(id: Int, json: String)]
}

/// ``ConversationRecords`` in PostgreSQL.
public struct PostgresConversationRecords: ConversationRecords {
    public let store: ConversationStore
    /// The gateway reading: its own stream clients are counted by itself, the others' from `stream_connections`.
    public let gateway: String
    var postgres: PostgresClient { store.postgres }

    public init(store: ConversationStore, gateway: String) {
        self.store = store
        self.gateway = gateway
    }

    /// `column` (a timestamptz) as UTC ISO 8601 with microseconds, formatted by PostgreSQL.
    static func utc(_ column: String) -> String {
        #"to_char(\#(column) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#
    }

    /// The columns of a ``ConversationSummary`` from `conversations c`, the gateway bound as `$<parameter>`.
    static func summaryColumns(gateway parameter: Int) -> String {
        """
        c.id, c.title, \(utc("c.created_at")) AS created, \(utc("c.updated_at")) AS updated, c.status,
        c.runtime_status, c.selected_repository, c.selected_branch, c.git_provider, c.trigger, c.agent_state,
        c.sandbox_id, c.llm_model, c.prompt_tokens, c.completion_tokens, c.accumulated_cost,
        c.created_at::text AS cursor_time, \(StreamCensusStore.othersColumn(conversation: "c", gateway: parameter))
        """
    }

    static func summary(_ row: PostgresRow) throws -> ConversationSummary {
        let id = try row.decode(UUID.self, "id")
        return ConversationSummary(
            id: id,
            title: try row.decode(String?.self, "title"),
            createdAt: try row.decode(String?.self, "created"),
            updatedAt: try row.decode(String?.self, "updated"),
            status: try row.decode(String?.self, "status"),
            runtimeStatus: try row.decode(String?.self, "runtime_status"),
            selectedRepository: try row.decode(String?.self, "selected_repository"),
            selectedBranch: try row.decode(String?.self, "selected_branch"),
            gitProvider: try row.decode(String?.self, "git_provider"),
            trigger: try row.decode(String?.self, "trigger"),
            agentState: try row.decode(String?.self, "agent_state"),
            sandboxID: try row.decode(UUID?.self, "sandbox_id"),
            llmModel: try row.decode(String?.self, "llm_model"),
            promptTokens: try row.decode(Int.self, "prompt_tokens"),
            completionTokens: try row.decode(Int.self, "completion_tokens"),
            accumulatedCost: try row.decode(Double.self, "accumulated_cost"),
            otherConnections: try row.decode(Int.self, "other_connections"),
            cursor: PageCursor(createdAt: try row.decode(String.self, "cursor_time"), id: id)
        )
    }

    /// `user`'s conversations at work and live sandboxes, as columns `running` and `sandboxes` of a select that
    /// binds the user as `$<parameter>`.
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

    public func create(_ new: ConversationStore.NewConversation) async throws -> Bool {
        try await store.create(new)
    }

    public func remove(_ conversation: UUID) async throws {
        try await store.remove(conversation)
    }

    public func owner(of conversation: UUID) async throws -> UUID? {
        try await postgres.query(
            "SELECT user_id FROM conversations WHERE id = $1 AND NOT deleting",
            [.uuid(conversation)]
        )
        .first?.decode(UUID.self, "user_id")
    }

    public func usage(_ user: UUID) async throws -> UserLimits.Usage {
        let rows = try await postgres.query("SELECT \(Self.usageColumns(user: 1))", [.uuid(user)])
        guard let row = rows.first else { return UserLimits.Usage(running: 0, sandboxes: 0) }
        return try Self.usage(row)
    }

    public func standing(_ conversation: UUID, user: UUID) async throws -> ConversationStanding? {
        let rows = try await postgres.query(
            """
            SELECT c.agent_state,
                EXISTS (SELECT 1 FROM sandboxes s
                        WHERE s.conversation_id = c.id AND s.status IN ('starting', 'running')) AS holds_sandbox,
                \(Self.usageColumns(user: 2))
            FROM conversations c WHERE c.id = $1 AND c.user_id = $2 AND NOT c.deleting
            """,
            [.uuid(conversation), .uuid(user)]
        )
        guard let row = rows.first else { return nil }
        return ConversationStanding(
            agentState: AgentState(rawValue: try row.decode(String.self, "agent_state")),
            holdsSandbox: try row.decode(Bool.self, "holds_sandbox"),
            usage: try Self.usage(row)
        )
    }

    public func summary(_ conversation: UUID, user: UUID) async throws -> ConversationSummary? {
        try await postgres.query(
            """
            SELECT \(Self.summaryColumns(gateway: 3)) FROM conversations c
            WHERE c.id = $1 AND c.user_id = $2 AND NOT c.deleting
            """,
            [.uuid(conversation), .uuid(user), .text(gateway)]
        ).first.map(Self.summary)
    }

    public func list(
        user: UUID,
        after cursor: PageCursor?,
        limit: Int
    ) async throws -> (page: [ConversationSummary], more: Bool) {
        var sql = """
            SELECT \(Self.summaryColumns(gateway: 3)) FROM conversations c WHERE c.user_id = $1 AND NOT c.deleting
            """
        var bindings: [PostgresValue] = [.uuid(user), .int(Int64(limit + 1)), .text(gateway)]
        if let cursor {
            sql += " AND (c.created_at, c.id) < ($4::timestamptz, $5)"
            bindings += [.text(cursor.createdAt), .uuid(cursor.id)]
        }
        sql += " ORDER BY c.created_at DESC, c.id DESC LIMIT $2"
        let rows = try await postgres.query(sql, bindings)
        return (try rows.prefix(limit).map(Self.summary), rows.count > limit)
    }

    public func markDeleting(_ conversation: UUID, user: UUID, _ deleting: Bool) async throws -> Bool {
        try await postgres.execute(
            "UPDATE conversations SET deleting = $3 WHERE id = $1 AND user_id = $2",
            [.uuid(conversation), .uuid(user), .bool(deleting)]
        ) > 0
    }

    public func rename(_ conversation: UUID, user: UUID, title: String) async throws -> Bool {
        try await postgres.execute(
            "UPDATE conversations SET title = $3, updated_at = now() WHERE id = $1 AND user_id = $2 AND NOT deleting",
            [.uuid(conversation), .uuid(user), .text(title)]
        ) > 0
    }

    public func events(
        _ conversation: UUID,
        from start: Int,
        through end: Int?,
        reverse: Bool,
        limit: Int
    ) async throws -> [(id: Int, json: String)] {
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
