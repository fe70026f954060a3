import DeckhandCore
import Foundation
import Postgres

/// The conversation workers' statements on `conversations`, `events`, `llm_calls` and `sandboxes`.
///
/// The synchronous functions run on a connection inside one hop (a transaction, or a step's reserved
/// connection); the asynchronous ones are one hop each.
public struct ConversationStore: Sendable {
    public let postgres: PostgresClient
    /// Names the deployment in advisory-lock keys (advisory locks are database-wide; schemas are not).
    public let deployment: String
    /// Seals the model keys stored per conversation (`llm.key_secret`); nil: none may be stored.
    public let sealer: StoredKeySealer?

    public init(postgres: PostgresClient, deployment: String, sealer: StoredKeySealer? = nil) {
        self.postgres = postgres
        self.deployment = deployment
        self.sealer = sealer
    }

    /// The session advisory-lock key of a conversation's step chain (FNV-1a of deployment and id).
    public func stepLockKey(_ conversation: UUID) -> Int64 {
        Int64(bitPattern: FNV1a.hash("deckhand.step:\(deployment):\(conversation.uuidString.lowercased())"))
    }

    // MARK: Rows

    public static func conversation(
        _ connection: PostgresConnection,
        _ id: UUID,
        lock: Bool = false
    ) throws
        -> ConversationRecord?
    {
        try connection.query(
            "SELECT \(ConversationRecord.columns) FROM conversations WHERE id = $1\(lock ? " FOR UPDATE" : "")",
            [.uuid(id)]
        ).first.map(ConversationRecord.init)
    }

    /// The conversation's events with id above `after`, in order.
    public static func events(_ connection: PostgresConnection, _ id: UUID, after: Int = -1) throws -> [StoredEvent] {
        try eventsAndSize(connection, id, after: after).events
    }

    /// ``events(_:_:after:)`` and the size of the stored JSON they were read from, in bytes.
    public static func eventsAndSize(
        _ connection: PostgresConnection,
        _ id: UUID,
        after: Int
    ) throws -> (events: [StoredEvent], bytes: Int) {
        var bytes = 0
        let events = try connection.query(
            "SELECT payload, step FROM events WHERE conversation_id = $1 AND id > $2 ORDER BY id",
            [.uuid(id), .int(Int64(after))]
        ).map { row in
            let payload = try row.decode(String.self, "payload")
            bytes += payload.utf8.count
            return StoredEvent(
                event: try Event(json: try JSONValue(parsing: payload)),
                step: try row.decode(Int?.self, "step")
            )
        }
        return (events, bytes)
    }

    /// The events a step wrote, in order.
    public static func events(_ connection: PostgresConnection, _ id: UUID, step: Int) throws -> [Event] {
        try connection.query(
            "SELECT payload FROM events WHERE conversation_id = $1 AND step = $2 ORDER BY id",
            [.uuid(id), .int(Int64(step))]
        ).map { try Event(json: try JSONValue(parsing: try $0.decode(String.self, "payload"))) }
    }

    /// Appends `events` with the next ids and returns them with their ids and the masked content as stored;
    /// throws when the conversation does not exist. One statement: the `UPDATE` of `event_count` takes the
    /// row lock until the transaction (or the statement) ends, so two writers never get the same ids.
    public static func append(
        _ connection: PostgresConnection,
        _ conversation: UUID,
        _ events: [Event],
        step: Int?,
        masker: SecretMasker
    ) throws -> [Event] {
        guard let stored = try append(connection, conversation, events, step: step, masker: masker, onlyAt: nil) else {
            throw DeckhandError(.conversationNotFound, "conversation \(conversation) does not exist")
        }
        return stored
    }

    /// Appends `events` as ``append(_:_:_:step:masker:)`` does; with `onlyAt`, only while the chain is at that
    /// step and running. Nil when nothing was appended (the conversation moved on, or is gone).
    public static func append(
        _ connection: PostgresConnection,
        _ conversation: UUID,
        _ events: [Event],
        step: Int?,
        masker: SecretMasker,
        onlyAt: Int?
    ) throws -> [Event]? {
        guard !events.isEmpty else { return [] }
        let masked = events.map { event -> Event in
            var event = masker.mask(event)
            event.id = nil
            return event
        }
        let condition = onlyAt == nil ? "" : " AND step_seq = $5 AND agent_state = $6"
        let rows = try connection.query(
            """
            WITH c AS (
                UPDATE conversations SET event_count = event_count + $3, updated_at = now()
                WHERE id = $1\(condition)
                RETURNING event_count - $3 AS first
            )
            INSERT INTO events (conversation_id, id, source, kind, payload, step)
            SELECT $1, c.first + e.n - 1, e.value ->> 'source', coalesce(e.value ->> 'action', e.value ->> 'observation'),
                jsonb_set(e.value, '{id}', to_jsonb(c.first + e.n - 1)), $4
            FROM c, jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e(value, n)
            RETURNING id
            """,
            [
                .uuid(conversation), .jsonb(JSONValue.array(masked.map(\.json)).serialized), .int(Int64(events.count)),
                step.map { .int(Int64($0)) } ?? .null,
            ] + (onlyAt.map { [.int(Int64($0)), .text(AgentState.running.rawValue)] } ?? [])
        )
        guard let first = try rows.map({ try $0.decode(Int.self, "id") }).min() else { return nil }
        return masked.enumerated().map { offset, event in
            var event = event
            event.id = first + offset
            return event
        }
    }

    // MARK: One hop each

    /// Creates a user if it does not exist (tests, `deckhand dev`).
    public func ensureUser(_ id: UUID, name: String = "") async throws {
        try await postgres.execute(
            "INSERT INTO users (id, display_name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            [.uuid(id), .text(name)]
        )
    }

    /// What a new conversation row holds (the gateway writes it before it publishes `start`).
    public struct NewConversation: Sendable {
        public var id: UUID
        public var userID: UUID
        public var title: String
        public var llmModel: String?
        public var llmBaseURL: String?
        public var llmAPIKey: String?
        public var maxIterations: Int
        public var maxBudget: Double?
        public var trigger: String?
        public var selectedRepository: String?
        public var selectedBranch: String?
        public var gitProvider: String?
        /// The sandbox backend to ask for; nil: the worker's default.
        public var runtime: RuntimeSettings.Backend?

        public init(
            id: UUID = UUID(),
            userID: UUID,
            title: String = "",
            llmModel: String? = nil,
            llmBaseURL: String? = nil,
            llmAPIKey: String? = nil,
            maxIterations: Int = 100,
            maxBudget: Double? = nil,
            trigger: String? = nil,
            selectedRepository: String? = nil,
            selectedBranch: String? = nil,
            gitProvider: String? = nil,
            runtime: RuntimeSettings.Backend? = nil
        ) {
            self.id = id
            self.userID = userID
            self.title = title
            self.llmModel = llmModel
            self.llmBaseURL = llmBaseURL
            self.llmAPIKey = llmAPIKey
            self.maxIterations = maxIterations
            self.maxBudget = maxBudget
            self.trigger = trigger
            self.selectedRepository = selectedRepository
            self.selectedBranch = selectedBranch
            self.gitProvider = gitProvider
            self.runtime = runtime
        }
    }

    /// Inserts the conversation; false when one with its id exists already (nothing is changed).
    @discardableResult
    public func create(_ new: NewConversation) async throws -> Bool {
        func text(_ value: String?) -> PostgresValue { value.map(PostgresValue.text) ?? .null }
        var sealedKey: String?
        if let key = new.llmAPIKey {
            guard let sealer else {
                throw DeckhandError(
                    .invalidConfiguration,
                    "a conversation's own model key is stored only encrypted: set llm.key_secret"
                )
            }
            sealedKey = try sealer.seal(key)
        }
        let inserted = try await postgres.execute(
            """
            INSERT INTO conversations (id, user_id, title, llm_model, llm_base_url, llm_api_key, max_iterations,
                max_budget_per_task, trigger, selected_repository, selected_branch, git_provider, runtime)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT (id) DO NOTHING
            """,
            [
                .uuid(new.id), .uuid(new.userID), .text(new.title), text(new.llmModel), text(new.llmBaseURL),
                text(sealedKey), .int(Int64(new.maxIterations)), .optional(new.maxBudget.map(PostgresValue.double)),
                text(new.trigger), text(new.selectedRepository), text(new.selectedBranch), text(new.gitProvider),
                text(new.runtime?.rawValue),
            ]
        )
        return inserted == 1
    }

    /// What a step reads first, in one query: the conversation, its live sandbox (its `last_active_at` moved
    /// on when it is running and was last touched over 30 s ago: the idle timers count in minutes, and a
    /// read-only query needs no commit to disk), the response stored for step `step`, and the prompt size of
    /// the latest model call.
    public struct StepStart: Sendable {
        public var record: ConversationRecord
        public var sandbox: SandboxEndpoint?
        public var storedResponse: String?
        public var historyEnd: Int?
        public var lastPromptTokens: Int?
    }

    public static func stepStart(_ connection: PostgresConnection, _ id: UUID, step: Int) throws -> StepStart? {
        try connection.query(
            """
            WITH touched AS (
                UPDATE sandboxes SET last_active_at = now()
                WHERE conversation_id = $1 AND status = 'running' AND last_active_at < now() - interval '30 seconds'
            )
            SELECT \(ConversationRecord.columns(qualifiedBy: "c.")),
                s.id AS live_sandbox, s.status AS live_status, s.url AS live_url, s.session_api_key AS live_key,
                l.response::text AS stored_response, l.history_end AS stored_history_end,
                (SELECT p.prompt_tokens FROM llm_calls p WHERE p.conversation_id = c.id ORDER BY p.step DESC LIMIT 1)
                    AS last_prompt_tokens
            FROM conversations c
            LEFT JOIN sandboxes s ON s.conversation_id = c.id AND s.status NOT IN ('lost', 'error')
            LEFT JOIN llm_calls l ON l.conversation_id = c.id AND l.step = $2
            WHERE c.id = $1
            """,
            [.uuid(id), .int(Int64(step))]
        ).first.map { row in
            var sandbox: SandboxEndpoint?
            if let sandboxID = try row.decode(UUID?.self, "live_sandbox") {
                sandbox = SandboxEndpoint(
                    id: sandboxID,
                    status: try row.decode(String.self, "live_status"),
                    url: try row.decode(String?.self, "live_url"),
                    sessionAPIKey: try row.decode(String?.self, "live_key")
                )
            }
            return StepStart(
                record: try ConversationRecord(row: row),
                sandbox: sandbox,
                storedResponse: try row.decode(String?.self, "stored_response"),
                historyEnd: try row.decode(Int?.self, "stored_history_end"),
                lastPromptTokens: try row.decode(Int?.self, "last_prompt_tokens")
            )
        }
    }

    /// The sandbox backend the conversation asked for, if any.
    public func runtime(of id: UUID) async throws -> RuntimeSettings.Backend? {
        let rows = try await postgres.query("SELECT runtime FROM conversations WHERE id = $1", [.uuid(id)])
        return try rows.first?.decode(String?.self, "runtime").flatMap(RuntimeSettings.Backend.init(rawValue:))
    }

    /// Removes a conversation row (its events and model calls go with it).
    public func remove(_ id: UUID) async throws {
        try await postgres.execute("DELETE FROM conversations WHERE id = $1", [.uuid(id)])
    }

    public func conversation(_ id: UUID) async throws -> ConversationRecord? {
        try await postgres.withConnection { try Self.conversation($0, id) }
    }

    public func events(_ id: UUID, after: Int = -1) async throws -> [StoredEvent] {
        try await postgres.withConnection { try Self.events($0, id, after: after) }
    }
}

extension DeckhandError.Code {
    /// The conversation does not exist (or was deleted).
    public static let conversationNotFound: Self = "CONVERSATION$NOT_FOUND"
}
