import DeckhandCore
import DeckhandStore
import Foundation

/// The gateway's view of conversations: ``ConversationRecords`` (every read scoped to the requesting user:
/// another user's conversation does not exist), a cache of owners, and OpenHands' `ConversationInfo`.
struct GatewayStore: Sendable {
    let records: any ConversationRecords
    /// Conversation → owner, for the commands that need only the ownership check (a conversation never
    /// changes hands, so entries only leave when the map is full).
    let owners = BoundedCache<UUID, UUID>(capacity: 100_000)

    init(records: any ConversationRecords) {
        self.records = records
    }

    /// Whether `user` owns `conversation` (a cached answer when it was yes before).
    func owns(_ user: UUID, _ conversation: UUID) async throws -> Bool {
        if let owner = owners[conversation] { return owner == user }
        guard let owner = try await records.owner(of: conversation) else { return false }
        owners.set(owner, for: conversation)
        return owner == user
    }

    /// Throws a 404 unless `user` owns `conversation`.
    func requireOwner(_ user: UUID, _ conversation: UUID) async throws {
        guard try await owns(user, conversation) else { throw APIError.conversationNotFound }
    }

    /// What `user` holds now, for the per-user limits.
    func usage(_ user: UUID) async throws -> UserLimits.Usage {
        try await records.usage(user)
    }

    /// Where `user`'s conversation stands before a command that may put it to work; nil when there is none.
    func standing(_ conversation: UUID, user: UUID) async throws -> ConversationStanding? {
        guard let standing = try await records.standing(conversation, user: user) else { return nil }
        owners.set(user, for: conversation)
        return standing
    }

    /// The conversation as `ConversationInfo`, or nil when `user` has no such conversation.
    func info(_ conversation: UUID, user: UUID, connections: Int) async throws -> JSONValue? {
        try await records.summary(conversation, user: user).map {
            Self.info($0, connections: connections + $0.otherConnections)
        }
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
        let (page, more) = try await records.list(user: user, after: cursor, limit: limit)
        let results = page.map { Self.info($0, connections: connections($0.id) + $0.otherConnections) }
        return (results, more ? page.last?.cursor : nil)
    }

    /// OpenHands' `ConversationInfo`.
    static func info(_ summary: ConversationSummary, connections: Int) -> JSONValue {
        [
            "conversation_id": .string(summary.id.apiString),
            "title": JSONValue(summary.title),
            "created_at": JSONValue(summary.createdAt),
            "last_updated_at": JSONValue(summary.updatedAt),
            "status": JSONValue(summary.status),
            "runtime_status": JSONValue(summary.runtimeStatus),
            "selected_repository": JSONValue(summary.selectedRepository),
            "selected_branch": JSONValue(summary.selectedBranch),
            "git_provider": JSONValue(summary.gitProvider),
            "trigger": JSONValue(summary.trigger),
            "url": .string("/api/conversations/\(summary.id.apiString)"),
            "session_api_key": .null,
            "num_connections": .number(Double(connections)),
            "conversation_version": "V0",
            "agent_state": JSONValue(summary.agentState),
            "sandbox_id": JSONValue(summary.sandboxID?.apiString),
            "llm_model": JSONValue(summary.llmModel),
            "prompt_tokens": .number(Double(summary.promptTokens)),
            "completion_tokens": .number(Double(summary.completionTokens)),
            "accumulated_cost": .number(summary.accumulatedCost),
        ]
    }

    /// Renames `user`'s conversation; false when there is no such conversation.
    func rename(_ conversation: UUID, user: UUID, title: String) async throws -> Bool {
        try await records.rename(conversation, user: user, title: title)
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
        try await records.events(conversation, from: start, through: end, reverse: reverse, limit: limit)
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
