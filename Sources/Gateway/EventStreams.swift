import DeckhandCore
import DeckhandStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// The live event streams: WebSocket `/sockets/events/{id}?latest_event_id=N` and Server-Sent Events at
/// `GET /api/conversations/{id}/events/stream` (honouring `Last-Event-ID`).
///
/// Both replay from PostgreSQL every event after the client's last, then go on with the gateway's live
/// feed, in id order with no duplicate and no gap: the live binding is in place before the replay starts,
/// ids already sent are dropped, and a live id that jumps ahead is preceded by the missing ones, read from
/// PostgreSQL (a worker that died between its commit and its publish leaves such a hole).
struct EventStreams: Sendable {
    let hub: EventHub
    let store: GatewayStore
    let authentication: Authentication
    let routes: ConversationRoutes
    let metrics: GatewayMetrics
    let logger: Logger
    /// The streams each user holds open on this gateway (`gateway.max_streams_per_user`).
    let open: OpenStreams

    /// How long a WebSocket client without a key in its request has to send `{"type":"auth","api_key":…}`.
    static let authenticationWindow: Duration = .seconds(10)
    static let replayBatch = 500

    /// Why a stream was ended by the gateway.
    enum Ending: Error, Equatable {
        /// The client fell more than `gateway.stream_buffer` events behind.
        case tooSlow
    }

    func add(to router: Router<GatewayRequestContext>, webSockets: Router<GatewayRequestContext>) {
        router.get("api/conversations/:id/events/stream") { request, context in
            try await serverSentEvents(request, context)
        }
        webSockets.ws("sockets/events/:id") { request, context in
            try await checkUpgrade(request, context)
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            try await webSocket(inbound, outbound, context)
        }
        // The same path without `Upgrade: websocket` (a plain GET reaches the HTTP router): what the upgrade
        // would have refused is refused the same way, and the rest is told to upgrade.
        router.get("sockets/events/:id") { request, context -> Response in
            try await checkUpgrade(request, context)
            throw APIError.upgradeRequired
        }
    }

    /// What a WebSocket's upgrade request must pass: a conversation id, a valid `latest_event_id` and, when
    /// the request carries a key, a conversation of the key's user (without one, the first frame authenticates).
    private func checkUpgrade(_ request: Request, _ context: GatewayRequestContext) async throws {
        let id = try ConversationRoutes.conversationID(context)
        _ = try Self.latestEventID(request)
        if let principal = context.principal { try await store.requireOwner(principal.userID, id) }
    }

    /// `latest_event_id` (or, for SSE, `Last-Event-ID`, which wins over it): the last id the client has; -1
    /// (the default) for all. Each one given must be a single integer in -1...2^31-1 (an empty
    /// `latest_event_id` is -1).
    static func latestEventID(_ request: Request, header: Bool = false) throws -> Int {
        let query = request.uri.queryParameters.getAll("latest_event_id")
        guard query.count <= 1 else { throw APIError.invalidField("`latest_event_id` is given more than once") }
        let fromQuery = try eventID(query.first, "latest_event_id")
        guard header, let value = request.headers[.lastEventID] else { return fromQuery }
        // A browser's EventSource sends the header only with an id it received: present, it is an integer.
        return try ConversationRoutes.int(value, "Last-Event-ID", range: range) ?? -1
    }

    private static let range = -1...Int(Int32.max)

    private static func eventID(_ text: String?, _ name: String) throws -> Int {
        // Empty is "all", as browser WebSocket clients send it for a client that has nothing yet.
        guard let text, !text.isEmpty else { return -1 }
        return try ConversationRoutes.int(text, name, range: range) ?? -1
    }

    // MARK: The feed

    /// Sends every event of the subscription's conversation after `after`, then live ones, until the
    /// subscription ends (the gateway stops) or `send` throws (the client left); throws ``Ending/tooSlow``
    /// when the client was cut off.
    func feed(
        _ subscription: Subscription,
        after: Int,
        send: (Int, String) async throws -> Void,
        tick: () async throws -> Void = {}
    ) async throws {
        var last = after
        func catchUp(through end: Int?) async throws {
            while true {
                let batch = try await store.events(
                    subscription.conversation,
                    from: last + 1,
                    through: end,
                    limit: Self.replayBatch
                )
                for event in batch {
                    try await send(event.id, event.json)
                    last = event.id
                }
                if batch.count < Self.replayBatch { return }
            }
        }
        try await catchUp(through: nil)
        for await signal in subscription.signals {
            switch signal {
            case .event(let id, let json):
                guard id > last else { continue }
                if id > last + 1 { try await catchUp(through: id - 1) }
                guard id > last else { continue }
                try await send(id, json)
                last = id
            case .resync:
                try await catchUp(through: nil)
            case .tick:
                try await tick()
            }
        }
        if subscription.overflowed.isSet { throw Ending.tooSlow }
    }

    // MARK: Server-Sent Events

    func serverSentEvents(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let id = try ConversationRoutes.conversationID(context)
        let after = try Self.latestEventID(request, header: true)
        try await store.requireOwner(user, id)
        try open.requireRoom(for: user)
        let subscription = try await hub.subscribe(id)
        let logger = logger
        let open = open
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: ResponseBody { [self] writer in
                metrics.streamOpened("sse")
                open.opened(by: user)
                defer {
                    subscription.close()
                    open.closed(by: user)
                    metrics.streamClosed("sse")
                }
                do {
                    try await feed(subscription, after: after) { id, json in
                        try await writer.write(ByteBuffer(string: "id: \(id)\nevent: event\ndata: \(json)\n\n"))
                    } tick: {
                        try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    }
                } catch Ending.tooSlow {
                    subscription.close()
                    metrics.streamCut()
                    let reason: JSONValue = [
                        "code": .string(DeckhandError.Code.streamTooSlow.rawValue),
                        "message": .string(Self.tooSlowMessage),
                    ]
                    try await writer.write(ByteBuffer(string: "event: error\ndata: \(reason.serialized)\n\n"))
                    logger.notice(
                        "stream cut off: the client fell behind",
                        metadata: [LogKey.conversationID.rawValue: "\(id)"]
                    )
                }
                try await writer.finish(nil)
            }
        )
    }

    static let tooSlowMessage = "the client fell too far behind the live events; reconnect with the last id it has"

    // MARK: WebSocket

    /// Close codes of the event socket beside the standard ones.
    enum CloseCode {
        static let unauthorized = WebSocketErrorCode(codeNumber: 4001)
        static let notFound = WebSocketErrorCode(codeNumber: 4004)
        static let tooSlow = WebSocketErrorCode(codeNumber: 4008)
        static let tooMany = WebSocketErrorCode(codeNumber: 4029)
    }

    /// Sends a close frame, giving up after a few seconds (the connection is then torn down).
    static func close(_ outbound: WebSocketOutboundWriter, _ code: WebSocketErrorCode, reason: String) async throws {
        _ = try? await withDeadline(.seconds(5)) { try await outbound.close(code, reason: reason) }
    }

    func webSocket(
        _ inbound: WebSocketInboundStream,
        _ outbound: WebSocketOutboundWriter,
        _ context: WebSocketRouterContext<GatewayRequestContext>
    ) async throws {
        let request = context.request
        let requestContext = context.requestContext
        let conversation = try ConversationRoutes.conversationID(requestContext)
        let after = try Self.latestEventID(request)
        let (principals, granted) = AsyncStream<Principal?>.makeStream()
        if let principal = requestContext.principal { granted.yield(principal) }
        let authentication = authentication
        let routes = routes

        try await withThrowingTaskGroup(of: Void.self) { group in
            // The client's frames: its key first (unless the request carried one), then user actions.
            group.addTask {
                var principal = requestContext.principal
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    guard case .text(let text) = message else { continue }
                    let frame = try? JSONValue(parsing: text)
                    guard let user = principal?.userID else {
                        let key = frame?["type"] == "auth" ? frame?["api_key"]?.stringValue : nil
                        principal = try await key.asyncFlatMap {
                            try await authentication.principal(forKey: $0, from: requestContext.clientAddress)
                        }
                        // A refusal is answered by the events task (it closes the socket, which ends this loop).
                        granted.yield(principal)
                        continue
                    }
                    do {
                        guard case .object(let fields)? = frame else {
                            throw APIError.invalidField("a frame must be a JSON object: a user action")
                        }
                        let args: [String: JSONValue]
                        if case .object(let object)? = fields["args"] { args = object } else { args = [:] }
                        let command = try ConversationRoutes.command(
                            action: fields["action"]?.stringValue,
                            args: args,
                            conversation: conversation
                        )
                        try await routes.perform(command, conversation: conversation, user: user)
                    } catch {
                        let answer = APIError(error, retryAfter: routes.settings.retryAfterSeconds)
                        let reply: JSONValue = [
                            "type": "error", "code": .string(answer.code.rawValue), "message": .string(answer.message),
                        ]
                        try await outbound.write(.text(reply.serialized))
                    }
                }
            }
            // The events.
            group.addTask { [self] in
                let first = try? await withDeadline(Self.authenticationWindow) {
                    var iterator = principals.makeAsyncIterator()
                    return await iterator.next() ?? nil
                }
                guard let principal = first ?? nil else {
                    try await Self.close(outbound, CloseCode.unauthorized, reason: "unauthorized: send a valid API key")
                    return
                }
                guard try await store.owns(principal.userID, conversation) else {
                    try await Self.close(outbound, CloseCode.notFound, reason: "conversation not found")
                    return
                }
                guard (try? open.requireRoom(for: principal.userID)) != nil else {
                    try await Self.close(outbound, CloseCode.tooMany, reason: OpenStreams.refusal)
                    return
                }
                open.opened(by: principal.userID)
                let subscription = try await hub.subscribe(conversation)
                metrics.streamOpened("websocket")
                defer {
                    subscription.close()
                    open.closed(by: principal.userID)
                    metrics.streamClosed("websocket")
                }
                do {
                    // In a task of its own, so that a cut-off can interrupt a write the client never reads.
                    let feeding = Task {
                        try await feed(subscription, after: after) { _, json in try await outbound.write(.text(json)) }
                    }
                    subscription.overflowed.whenSet { feeding.cancel() }
                    do {
                        try await withTaskCancellationHandler {
                            try await feeding.value
                        } onCancel: {
                            feeding.cancel()
                        }
                    } catch  where subscription.overflowed.isSet {
                        throw Ending.tooSlow
                    }
                    subscription.close()
                    if !Task.isCancelled {
                        try await Self.close(outbound, .goingAway, reason: "the gateway is shutting down")
                    }
                } catch Ending.tooSlow {
                    // Released before the close frame, which a client that reads nothing never lets through.
                    subscription.close()
                    metrics.streamCut()
                    try await Self.close(outbound, CloseCode.tooSlow, reason: Self.tooSlowMessage)
                }
            }
            // The stream ends when the events end or the client leaves.
            defer {
                group.cancelAll()
                granted.finish()
            }
            try await group.next()
        }
    }
}

/// The live streams each user holds open on one gateway, against `gateway.max_streams_per_user`: a client
/// that opens streams without end is refused (429, or a WebSocket closed with 4029) instead of holding the
/// gateway's memory and bindings. Checked before a stream opens and counted once it runs, so two streams
/// opened at the same instant may both pass.
final class OpenStreams: Sendable {
    let limit: Int
    private let counts = Mutex<[UUID: Int]>([:])

    static let refusal = "too many open streams for this user (gateway.max_streams_per_user): close one first"

    init(limit: Int) { self.limit = limit }

    func requireRoom(for user: UUID) throws {
        guard limit > 0, counts.withLock({ $0[user] ?? 0 }) >= limit else { return }
        throw APIError(.tooManyRequests, .streamTooMany, Self.refusal)
    }

    func opened(by user: UUID) { counts.withLock { $0[user, default: 0] += 1 } }

    func closed(by user: UUID) {
        counts.withLock { counts in
            let left = (counts[user] ?? 1) - 1
            counts[user] = left > 0 ? left : nil
        }
    }
}

extension Optional {
    fileprivate func asyncFlatMap<U>(_ transform: (Wrapped) async throws -> U?) async rethrows -> U? {
        guard let self else { return nil }
        return try await transform(self)
    }
}

extension HTTPField.Name {
    /// The SSE reconnection header: the id of the last event the client received.
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
}
