import AMQP
import DeckhandCore
import DeckhandStore
import Foundation
import HTTPTypes
import Hummingbird
import Messaging
import NIOCore

/// The OpenHands V0 conversation routes (PROTOCOL.md §A): rows and reads from PostgreSQL, everything the
/// agent must do as commands on `conversation.commands`. A 2xx means the command was confirmed by the broker
/// (or, for a new conversation, the row committed and its `start` confirmed).
struct ConversationRoutes: Sendable {
    let settings: GatewaySettings
    /// What callers may choose (backends, models, iterations, budget) and hold at once.
    let limits: UserLimits
    let store: GatewayStore
    /// Where the conversation commands go (the broker's `conversation.commands`).
    let commands: any ConversationCommandSending
    let metrics: GatewayMetrics
    /// This gateway's stream clients of a conversation (`num_connections`).
    let connections: @Sendable (UUID) -> Int

    static let createFields = Set([
        "initial_user_msg", "image_urls", "repository", "selected_branch", "git_provider",
        "conversation_instructions", "replay_json", "runtime", "llm_model", "max_iterations",
        "max_budget_per_task", "conversation_id",
    ]).union(ignoredCreateFields)

    /// Fields of OpenHands' `InitSessionRequest` that Deckhand accepts and does not use: a suggested task or a
    /// microagent to create (OpenHands builds the first message from them; send `initial_user_msg`
    /// instead) and an MCP configuration (Deckhand's agent has no MCP tools).
    static let ignoredCreateFields: Set<String> = ["suggested_task", "create_microagent", "mcp_config"]

    /// What `POST …/start` may carry: OpenHands' `ProvidersSetModel` (which git providers' tokens to pass to
    /// the sandbox; Deckhand passes none, so it is accepted and ignored).
    static let startFields: Set<String> = ["providers_set"]

    func add(to router: Router<GatewayRequestContext>) {
        let api = router.group("api/conversations")
        api.post { request, context in try await create(request, context) }
        api.get { request, context in try await list(request, context) }
        api.get(":id") { request, context in try await get(request, context) }
        api.patch(":id") { request, context in try await rename(request, context) }
        api.delete(":id") { request, context in try await delete(request, context) }
        api.post(":id/start") { request, context in try await control(.start, request, context) }
        api.post(":id/stop") { request, context in try await control(.stop, request, context) }
        api.post(":id/message") { request, context in try await message(request, context) }
        api.post(":id/events") { request, context in try await userAction(request, context) }
        api.get(":id/events") { request, context in try await events(request, context) }
        api.get(":id/trajectory") { request, context in try await trajectory(request, context) }
    }

    // MARK: Commands

    func create(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let body = try await JSONBody(request, limit: settings.maxBodyBytes, allowed: Self.createFields)
        guard body.hasBody else {
            throw APIError(
                .unprocessableContent,
                .requestBodyRequired,
                "send the conversation as a JSON object (`{}` at least)"
            )
        }
        for name in Self.ignoredCreateFields {
            guard let value = body.raw(name) else { continue }
            switch value {
            case .object, .null: continue
            default: throw APIError.invalidField("`\(name)` must be an object or null")
            }
        }
        var conversationID = UUID()
        if let chosen = try body.string("conversation_id", maxLength: 36) {
            guard let parsed = UUID(apiString: chosen) else {
                throw APIError.invalidField("`conversation_id` must be a UUID (32 hex digits, or with dashes)")
            }
            conversationID = parsed
        }
        let start = ConversationStart(
            conversationID: conversationID,
            initialUserMessage: try body.string("initial_user_msg", maxLength: 500_000),
            imageURLs: try body.strings("image_urls"),
            replayJSON: try Self.replay(body),
            conversationInstructions: try body.string("conversation_instructions", maxLength: 100_000)
        )
        let asked = UserLimits.Request(
            backend: try body.string("runtime", maxLength: 20),
            model: try body.string("llm_model", maxLength: 200),
            maxIterations: try body.int("max_iterations", range: 1...100_000),
            maxBudget: try body.double("max_budget_per_task", range: 0...1_000_000)
        )
        let granted: UserLimits.Granted
        switch limits.grant(asked) {
        case .success(let grant): granted = grant
        case .failure(let refusal): throw APIError.refused(refusal)
        }
        var new = ConversationStore.NewConversation(
            id: start.conversationID,
            userID: user,
            title: "Conversation \(start.conversationID.apiString.prefix(5))",
            llmModel: granted.model,
            maxIterations: granted.maxIterations,
            maxBudget: granted.maxBudget,
            trigger: "openhands_api",
            selectedRepository: try body.string("repository", maxLength: 500),
            selectedBranch: try body.string("selected_branch", maxLength: 250),
            gitProvider: try body.string("git_provider", maxLength: 50)
        )
        new.runtime = granted.backend
        try commands.requireConnected()
        try await requireCapacity(user)
        guard try await store.records.create(new) else {
            throw APIError(.conflict, .conversationExists, "a conversation with the id \(new.id.apiString) exists")
        }
        store.owners.set(user, for: new.id)
        do {
            try await send(.start, start, user: user)
        } catch {
            // Not accepted: leave nothing behind that the client would not know about.
            try? await store.records.remove(new.id)
            throw error
        }
        return json([
            "status": "ok", "conversation_id": .string(new.id.apiString), "conversation_status": "STARTING",
            "message": .null,
        ])
    }

    /// Throws a 429 when `user` already holds as many working conversations or live sandboxes as the
    /// operator allows (`gateway.max_running_conversations`, `gateway.max_live_sandboxes`): before a new
    /// conversation.
    func requireCapacity(_ user: UUID) async throws {
        guard limits.capsUsers else { return }
        if let refusal = limits.capacityRefusal(try await store.usage(user), addsSandbox: true) {
            throw APIError(.tooManyRequests, refusal.code, refusal.message)
        }
    }

    /// Throws a 404 unless `user` owns `conversation`, and a 429 when `command` would put it to work while
    /// `user` already holds as much as the operator allows: a message or a resume wakes a conversation as a
    /// start does, so each is held to the same caps.
    func requireRoom(_ command: ConversationCommand, _ conversation: UUID, user: UUID) async throws {
        guard limits.capsUsers, UserLimits.mayWake(command) else {
            return try await store.requireOwner(user, conversation)
        }
        guard let standing = try await store.standing(conversation, user: user) else {
            throw APIError.conversationNotFound
        }
        guard UserLimits.wakes(command, from: standing.agentState) else { return }
        if let refusal = limits.capacityRefusal(standing.usage, addsSandbox: !standing.holdsSandbox) {
            throw APIError(.tooManyRequests, refusal.code, refusal.message)
        }
    }

    /// `replay_json`: OpenHands sends the trajectory as a JSON string (and replays only a non-empty one, so an
    /// empty string is absent); an array (or `{"trajectory": […]}`) is taken as it is. Every event is an object.
    static func replay(_ body: JSONBody) throws -> JSONValue? {
        guard var value = body.raw("replay_json") else { return nil }
        let invalid = APIError.invalidField(
            "`replay_json` must be a JSON array of events (objects), or {\"trajectory\": [...]} (or a string holding either)"
        )
        if case .string(let text) = value {
            if text.isEmpty { return nil }
            guard let parsed = try? JSONValue(parsing: text) else { throw invalid }
            value = parsed
        }
        let events: [JSONValue]
        switch value {
        case .array(let items): events = items
        case .object:
            guard case .array(let items)? = value["trajectory"] else { throw invalid }
            events = items
        default: throw invalid
        }
        guard events.allSatisfy({ if case .object = $0 { true } else { false } }) else { throw invalid }
        return value
    }

    func control(
        _ command: ConversationCommand,
        _ request: Request,
        _ context: GatewayRequestContext
    ) async throws
        -> Response
    {
        let user = try context.requirePrincipal().userID
        let id = try Self.conversationID(context)
        let body = try await JSONBody(
            request,
            limit: settings.maxBodyBytes,
            allowed: command == .start ? Self.startFields : []
        )
        _ = try body.strings("providers_set")  // checked, then ignored
        guard let info = try await store.info(id, user: user, connections: connections(id)) else {
            throw APIError.conversationNotFound
        }
        if command == .start { try await requireRoom(.start, id, user: user) }
        if command == .start {
            try await send(.start, ConversationStart(conversationID: id), user: user)
        } else {
            try await send(command, ConversationTarget(conversationID: id), user: user)
        }
        // The status as it stands: the command was only queued, and no worker has acted on it yet.
        return json([
            "status": "ok", "conversation_id": .string(id.apiString),
            "conversation_status": info["status"] ?? .null,
            "message": .string(command == .stop ? "the conversation is stopping" : "the conversation is starting"),
        ])
    }

    func delete(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let id = try Self.conversationID(context)
        try await store.requireOwner(user, id)
        try commands.requireConnected()
        // Gone for every read at once; a worker removes the row and the sandbox.
        guard try await store.records.markDeleting(id, user: user, true) else { throw APIError.conversationNotFound }
        store.owners.remove(id)
        do {
            try await send(.delete, ConversationTarget(conversationID: id), user: user)
        } catch {
            // Not accepted: the conversation stays as it was.
            _ = try? await store.records.markDeleting(id, user: user, false)
            throw error
        }
        return json(true)
    }

    func message(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let id = try Self.conversationID(context)
        let body = try await JSONBody(request, limit: settings.maxBodyBytes, allowed: ["message"])
        guard let text = try body.string("message", maxLength: 500_000) else {
            throw APIError.invalidField("`message` is required")
        }
        try await requireRoom(.message, id, user: user)
        try await send(.message, UserMessage(conversationID: id, content: text), user: user)
        return json(["success": true])
    }

    /// `POST …/events`: a user action, a `message` or a `change_agent_state`.
    func userAction(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let id = try Self.conversationID(context)
        let body = try await JSONBody(request, limit: settings.maxBodyBytes, allowed: ["action", "args"])
        let action = try body.string("action", maxLength: 50)
        let args = try body.object("args") ?? [:]
        let command = try Self.command(action: action, args: args, conversation: id)
        try await perform(command, conversation: id, user: user)
        return json(["success": true])
    }

    /// Publishes what a user action asks for, once `user` is known to own the conversation and to have room
    /// for it at work.
    func perform(_ command: UserCommand, conversation: UUID, user: UUID) async throws {
        switch command {
        case .message(let message):
            try await requireRoom(.message, conversation, user: user)
            try await send(.message, message, user: user)
        case .control(let command):
            try await requireRoom(command, conversation, user: user)
            try await send(command, ConversationTarget(conversationID: conversation), user: user)
        }
    }

    enum UserCommand: Equatable {
        case message(UserMessage)
        case control(ConversationCommand)
    }

    /// What a user action asks for (the WebSocket's client frames take the same).
    static func command(action: String?, args: [String: JSONValue], conversation: UUID) throws -> UserCommand {
        switch action {
        case "message":
            guard let content = args["content"]?.stringValue else {
                throw APIError.invalidField("a message needs `args.content` (a string)")
            }
            var images: [String]?
            switch args["image_urls"] {
            case nil, .null?: images = nil
            case .array(let items)? where items.allSatisfy({ $0.stringValue != nil }):
                images = items.compactMap(\.stringValue)
            default: throw APIError.invalidField("`args.image_urls` must be an array of strings")
            }
            return .message(UserMessage(conversationID: conversation, content: content, imageURLs: images))
        case "change_agent_state":
            switch args["agent_state"]?.stringValue {
            case "stopped": return .control(.stop)
            case "paused": return .control(.pause)
            case "running": return .control(.resume)
            case "user_confirmed", "user_rejected":
                throw APIError(
                    .conflict,
                    .agentNoConfirmationPending,
                    "no action awaits confirmation: Deckhand does not run in confirmation mode"
                )
            default:
                throw APIError.invalidField(
                    "`args.agent_state` must be stopped, paused, running, user_confirmed or user_rejected"
                )
            }
        default:
            throw APIError.invalidField("`action` must be message or change_agent_state")
        }
    }

    // MARK: Reads

    func list(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let query = request.uri.queryParameters
        let limit = try Self.int(query.get("limit"), "limit", range: 1...100) ?? 20
        var cursor: PageCursor?
        if let token = query.get("page_id"), !token.isEmpty {
            guard let parsed = PageCursor(token: token) else { throw APIError.unknownPage }
            cursor = parsed
        }
        let page = try await store.list(user: user, after: cursor, limit: limit, connections: connections)
        return json(["results": .array(page.results), "next_page_id": JSONValue(page.next?.token)])
    }

    func get(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let id = try Self.conversationID(context)
        guard let info = try await store.info(id, user: user, connections: connections(id)) else {
            throw APIError.conversationNotFound
        }
        return json(info)
    }

    func rename(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let id = try Self.conversationID(context)
        let body = try await JSONBody(request, limit: settings.maxBodyBytes, allowed: ["title"])
        guard let title = try body.string("title", maxLength: 200), !title.isEmpty else {
            throw APIError.invalidField("`title` is required: 1 to 200 characters")
        }
        guard try await store.rename(id, user: user, title: title) else { throw APIError.conversationNotFound }
        return json(true)
    }

    func events(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let id = try Self.conversationID(context)
        let query = request.uri.queryParameters
        let start = try Self.int(query.get("start_id"), "start_id", range: 0...Int(Int32.max)) ?? 0
        let end = try Self.int(query.get("end_id"), "end_id", range: 0...Int(Int32.max))
        let limit = try Self.int(query.get("limit"), "limit", range: 1...100) ?? 20
        let reverse = try Self.bool(query.get("reverse"), "reverse") ?? false
        try await store.requireOwner(user, id)
        // One more than asked for says whether there are more.
        let events = try await store.events(id, from: start, through: end, reverse: reverse, limit: limit + 1)
        let page = events.prefix(limit).map(\.json).joined(separator: ",")
        return rawJSON("{\"events\":[\(page)],\"has_more\":\(events.count > limit)}")
    }

    func trajectory(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let id = try Self.conversationID(context)
        try await store.requireOwner(user, id)
        // Written in batches as they are read: a long conversation never sits in the gateway's memory whole.
        let store = store
        return Response(
            status: .ok,
            headers: [.contentType: "application/json"],
            body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: "{\"trajectory\":["))
                var next = 0
                var separator = ""
                while true {
                    let batch = try await store.events(id, from: next, limit: Self.trajectoryBatch)
                    var text = ""
                    for event in batch {
                        text += separator + event.json
                        separator = ","
                    }
                    if !text.isEmpty { try await writer.write(ByteBuffer(string: text)) }
                    guard batch.count == Self.trajectoryBatch, let last = batch.last else { break }
                    next = last.id + 1
                }
                try await writer.write(ByteBuffer(string: "]}"))
                try await writer.finish(nil)
            }
        )
    }

    static let trajectoryBatch = 500

    // MARK: Helpers

    /// Publishes a conversation command; fails at once (503) while RabbitMQ is not connected.
    func send<Payload: Encodable & Sendable>(
        _ command: ConversationCommand,
        _ payload: Payload,
        user: UUID
    ) async throws {
        try commands.requireConnected()
        do {
            try await commands.send(command, payload, userID: user.apiString)
            metrics.command(command.rawValue, confirmed: true)
        } catch {
            metrics.command(command.rawValue, confirmed: false)
            throw error
        }
    }

    static func conversationID(_ context: GatewayRequestContext) throws -> UUID {
        let text = context.parameters.get("id") ?? ""
        // Not an id this API could have made: no such conversation, as for any unknown id.
        guard let id = UUID(apiString: text) else { throw APIError.conversationNotFound }
        return id
    }

    /// A query parameter's integer; nil when the parameter is absent (present but empty is a 422).
    static func int(_ text: String?, _ name: String, range: ClosedRange<Int>) throws -> Int? {
        guard let text else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw APIError.invalidField("`\(name)` must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    static func bool(_ text: String?, _ name: String) throws -> Bool? {
        switch text?.lowercased() {
        case nil: return nil
        case "true", "1": return true
        case "false", "0": return false
        default: throw APIError.invalidField("`\(name)` must be true or false")
        }
    }
}

/// A 200 response with `value` as its JSON body.
func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
    rawJSON(value.serialized, status: status)
}

/// A response whose JSON body is already written.
func rawJSON(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
    Response(
        status: status,
        headers: [.contentType: "application/json"],
        body: ResponseBody(byteBuffer: ByteBuffer(string: text))
    )
}

/// What the conversation routes ask of the broker (``CommandBus``; an in-memory one in unit tests).
protocol ConversationCommandSending: Sendable {
    /// Throws `SERVICE$UNAVAILABLE` (a 503) while the broker is not connected, and `AMQP$BLOCKED` (a 503)
    /// while it blocks publishing (a resource alarm), rather than letting a publish wait for
    /// `amqp.publish_timeout`.
    func requireConnected() throws
    /// Publishes a conversation command; returns once the broker confirmed it.
    func send<Payload: Encodable & Sendable>(
        _ command: ConversationCommand,
        _ payload: Payload,
        userID: String
    ) async throws
}

extension CommandBus: ConversationCommandSending {
    func requireConnected() throws {
        let status = connection.status
        guard status.connected else { throw DeckhandError(.unavailable, "RabbitMQ is not connected") }
        guard !status.blocked else {
            throw DeckhandError(.amqpBlocked, "RabbitMQ is refusing new messages for now (a memory or disk alarm)")
        }
    }

    func send<Payload: Encodable & Sendable>(
        _ command: ConversationCommand,
        _ payload: Payload,
        userID: String
    ) async throws {
        try await send(command.rawValue, payload, to: topology.conversationQueue, userID: userID)
    }
}
