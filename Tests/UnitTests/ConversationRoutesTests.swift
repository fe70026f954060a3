import DeckhandCore
import DeckhandStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing

@testable import Gateway

/// The conversation routes over in-memory stores and broker, through the gateway's own middleware
/// (authentication, JSON errors), with Hummingbird's in-memory router test: the rules of the API without
/// PostgreSQL or RabbitMQ. The same routes run against the real services in the integration tests.
@Suite struct ConversationRoutesTests {
    static let alice = UUID()
    static let bob = UUID()
    static let aliceKey = "dh_" + String(repeating: "a", count: 64)
    static let bobKey = "dh_" + String(repeating: "b", count: 64)

    struct Bed {
        let records = MemoryConversationRecords()
        let commands = MemoryCommands()
        var limits = UserLimits()

        /// Serves the routes to `body` through Hummingbird's in-memory router test.
        func serve(_ body: @Sendable (Client) async throws -> Void) async throws {
            let router = Router(context: GatewayRequestContext.self)
            let metrics = GatewayMetrics()
            let keys = MemoryKeys(users: [ConversationRoutesTests.aliceKey: alice, ConversationRoutesTests.bobKey: bob])
            router.add(
                middleware: GatewayMiddleware(
                    authentication: .apiKeys(Authenticator(store: keys, ttl: .seconds(60))),
                    allowedOrigins: [],
                    retryAfter: 2,
                    metrics: metrics
                )
            )
            ConversationRoutes(
                settings: GatewaySettings(),
                limits: limits,
                store: GatewayStore(records: records),
                commands: commands,
                metrics: metrics,
                connections: { _ in 0 }
            )
            .add(to: router)
            try await Application(router: router).test(.router) { client in try await body(Client(client: client)) }
        }
    }

    struct Reply {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        var text: String
        var json: JSONValue { (try? JSONValue(parsing: text)) ?? .null }
        var code: String? { json["code"]?.stringValue }
    }

    struct Client {
        let client: any TestClientProtocol

        func callAsFunction(
            _ method: HTTPRequest.Method,
            _ path: String,
            _ body: String? = nil,
            key: String = ConversationRoutesTests.aliceKey
        ) async throws -> Reply {
            var headers: HTTPFields = [.authorization: "Bearer \(key)"]
            if body != nil { headers[.contentType] = "application/json" }
            return try await client.execute(
                uri: path,
                method: method,
                headers: headers,
                body: body.map { ByteBuffer(string: $0) }
            ) { response in
                Reply(status: response.status, headers: response.headers, text: String(buffer: response.body))
            }
        }

        func create(_ body: String = "{}", key: String = ConversationRoutesTests.aliceKey) async throws -> String {
            let reply = try await self(.post, "/api/conversations", body, key: key)
            try #require(reply.status == .ok, "\(reply.text)")
            return try #require(reply.json["conversation_id"]?.stringValue)
        }
    }

    @Test func createReadRenameAndPage() async throws {
        let bed = Bed()
        try await bed.serve { call in
            let id = try await call.create(#"{"initial_user_msg":"hi","selected_branch":"main"}"#)
            let sent = try #require(bed.commands.all.first)
            #expect(sent.command == .start && sent.userID == Self.alice.uuidString.lowercased())
            #expect(sent.payload["conversation_id"]?.stringValue?.lowercased() == id)
            #expect(sent.payload["initial_user_msg"] == "hi")

            let info = try await call(.get, "/api/conversations/\(id)")
            #expect(info.status == .ok)
            #expect(info.json["selected_branch"] == "main")
            #expect(info.json["title"]?.stringValue?.hasPrefix("Conversation ") == true)
            #expect(info.json["num_connections"] == 0)
            // OpenHands' 32 hex digits name the same conversation.
            let bare = id.replacingOccurrences(of: "-", with: "")
            #expect(try await call(.get, "/api/conversations/\(bare)").json["conversation_id"]?.stringValue == id)

            #expect(try await call(.patch, "/api/conversations/\(id)", #"{"title":"Renamed"}"#).text == "true")
            #expect(try await call(.get, "/api/conversations/\(id)").json["title"] == "Renamed")

            for _ in 0..<4 { _ = try await call.create() }
            var seen: [String] = []
            var page: String? = nil
            repeat {
                let query = "/api/conversations?limit=2" + (page.map { "&page_id=\($0)" } ?? "")
                let reply = try await call(.get, query)
                #expect(reply.status == .ok)
                seen += reply.json["results"]?.arrayValue?.compactMap { $0["conversation_id"]?.stringValue } ?? []
                page = reply.json["next_page_id"]?.stringValue
            } while page != nil && seen.count < 10
            #expect(seen.count == 5 && Set(seen).count == 5, "every conversation once, in pages of two: \(seen)")
            #expect(seen.last == id, "newest first")
            #expect(try await call(.get, "/api/conversations", key: Self.bobKey).json["results"] == [])
        }
    }

    @Test func badInputIsRefusedWithACodeAndLeavesNothing() async throws {
        let bed = Bed()
        try await bed.serve { call in
            let refused: [(String, HTTPResponse.Status, String)] = [
                ("", .unprocessableContent, "REQUEST$BODY_REQUIRED"),
                ("{", .badRequest, "REQUEST$MALFORMED_JSON"),
                (#"{"surprise":1}"#, .unprocessableContent, "REQUEST$INVALID_FIELD"),
                (#"{"max_iterations":"x"}"#, .unprocessableContent, "REQUEST$INVALID_FIELD"),
                (#"{"max_iterations":0}"#, .unprocessableContent, "REQUEST$INVALID_FIELD"),
                (#"{"conversation_id":"not-a-uuid"}"#, .unprocessableContent, "REQUEST$INVALID_FIELD"),
                (#"{"replay_json":42}"#, .unprocessableContent, "REQUEST$INVALID_FIELD"),
                (#"{"replay_json":[1]}"#, .unprocessableContent, "REQUEST$INVALID_FIELD"),
                (#"{"replay_json":"not json"}"#, .unprocessableContent, "REQUEST$INVALID_FIELD"),
                (#"{"mcp_config":"text"}"#, .unprocessableContent, "REQUEST$INVALID_FIELD"),
                (#"{"image_urls":"one"}"#, .unprocessableContent, "REQUEST$INVALID_FIELD"),
            ]
            for (body, status, code) in refused {
                let reply = try await call(.post, "/api/conversations", body.isEmpty ? nil : body)
                #expect(reply.status == status, "\(body): \(reply.text)")
                #expect(reply.code == code, "\(body): \(reply.text)")
                #expect(reply.json["message"]?.stringValue?.isEmpty == false)
            }
            #expect(bed.records.count == 0 && bed.commands.all.isEmpty, "nothing of a refused request stays")
            let id = try await call.create()
            for query in ["limit=0", "limit=x"] {
                let reply = try await call(.get, "/api/conversations?\(query)")
                #expect(reply.status == .unprocessableContent && reply.code == "REQUEST$INVALID_FIELD", "\(query)")
            }
            // A page_id this API did not return names no page; an empty one is the first page.
            let unknown = try await call(.get, "/api/conversations?page_id=nonsense")
            #expect(unknown.status == .notFound && unknown.code == "REQUEST$UNKNOWN_PAGE", "\(unknown.text)")
            #expect(try await call(.get, "/api/conversations?page_id=").status == .ok)
            for query in ["start_id=-1", "limit=101", "reverse=maybe"] {
                let reply = try await call(.get, "/api/conversations/\(id)/events?\(query)")
                #expect(reply.status == .unprocessableContent, "\(query): \(reply.text)")
            }
            let messages = [
                (#"{}"#, "REQUEST$INVALID_FIELD"), (#"{"message":1}"#, "REQUEST$INVALID_FIELD"),
            ]
            for (body, code) in messages {
                let reply = try await call(.post, "/api/conversations/\(id)/message", body)
                #expect(reply.status == .unprocessableContent && reply.code == code, "\(body): \(reply.text)")
            }
            let confirm = try await call(
                .post,
                "/api/conversations/\(id)/events",
                #"{"action":"change_agent_state","args":{"agent_state":"user_confirmed"}}"#
            )
            #expect(confirm.status == .conflict && confirm.code == "AGENT$NO_CONFIRMATION_PENDING")
            #expect(try await call(.get, "/api/conversations/nope").status == .notFound)
            #expect(
                try await call(.get, "/api/conversations", key: "dh_" + String(repeating: "c", count: 64)).status
                    == .unauthorized
            )
            #expect(bed.commands.all.count == 1, "only the one create's start was sent")
            // OpenHands replays only a non-empty `replay_json` string: an empty one is absent, not a refusal.
            _ = try await call.create(#"{"replay_json":""}"#)
            #expect(bed.records.count == 2)
        }
    }

    @Test func aBrokerDownOrRefusingIsA503AndLeavesNoConversation() async throws {
        let bed = Bed()
        try await bed.serve { call in
            bed.commands.connected.store(false, ordering: .relaxed)
            let down = try await call(.post, "/api/conversations", "{}")
            #expect(down.status == .serviceUnavailable && down.code == "SERVICE$UNAVAILABLE", "\(down.text)")
            #expect(down.headers[.retryAfter] == "2")
            bed.commands.connected.store(true, ordering: .relaxed)
            bed.commands.refusing.store(true, ordering: .relaxed)
            let refused = try await call(.post, "/api/conversations", "{}")
            #expect(refused.status == .serviceUnavailable && refused.code == "SERVICE$UNAVAILABLE", "\(refused.text)")
            #expect(refused.headers[.retryAfter] == "2")
            #expect(bed.records.count == 0, "a conversation whose start was not accepted is removed")
        }
    }

    @Test func commandsGoOnlyToTheOwnersConversations() async throws {
        let bed = Bed()
        try await bed.serve { call in
            let id = try await call.create()
            let path = "/api/conversations/\(id)"
            let attempts: [(HTTPRequest.Method, String, String?)] = [
                (.get, path, nil), (.patch, path, #"{"title":"mine"}"#), (.delete, path, nil),
                (.post, path + "/message", #"{"message":"hi"}"#), (.post, path + "/stop", nil),
                (.post, path + "/start", nil), (.get, path + "/events", nil), (.get, path + "/trajectory", nil),
                (.post, path + "/events", #"{"action":"message","args":{"content":"hi"}}"#),
            ]
            for (method, target, body) in attempts {
                let reply = try await call(method, target, body, key: Self.bobKey)
                #expect(reply.status == .notFound && reply.code == "CONVERSATION$NOT_FOUND", "\(method) \(target)")
            }
            #expect(bed.commands.all.map(\.command) == [.start], "nothing was sent for another user")

            let stop = try await call(.post, path + "/stop")
            #expect(stop.json["conversation_status"] == "STARTING", "the status as it stands, not STOPPED")
            #expect(try await call(.post, path + "/message", #"{"message":"more"}"#).json["success"] == true)
            let pause = #"{"action":"change_agent_state","args":{"agent_state":"paused"}}"#
            #expect(try await call(.post, path + "/events", pause).status == .ok)
            #expect(try await call(.delete, path).text == "true")
            #expect(bed.commands.all.map(\.command) == [.start, .stop, .message, .pause, .delete])
            #expect(bed.commands.all.last?.payload["conversation_id"]?.stringValue?.lowercased() == id)
        }
    }

    @Test func newWorkAndWakesAreHeldToTheUsersCaps() async throws {
        var limits = UserLimits()
        limits.maxRunningConversations = 1
        let bed = Bed(limits: limits)
        try await bed.serve { call in
            let first = try await call.create()
            let second = try await call(.post, "/api/conversations", "{}")
            #expect(second.status == .tooManyRequests && second.code == "LIMIT$RUNNING_CONVERSATIONS")
            // Another user's work does not count.
            _ = try await call.create(key: Self.bobKey)

            let firstID = try #require(UUID(uuidString: first))
            bed.records.update(firstID) { $0.agentState = .awaitingUserInput }
            let other = try await call.create()  // room again: the first rests
            let message = try await call(.post, "/api/conversations/\(first)/message", #"{"message":"wake"}"#)
            #expect(message.status == .tooManyRequests, "a message wakes the first while the other works")
            let busy = try await call(.post, "/api/conversations/\(other)/message", #"{"message":"more"}"#)
            #expect(busy.status == .ok, "a message to the conversation at work wakes nothing")
            #expect(try await call(.post, "/api/conversations/\(first)/stop").status == .ok, "a stop always passes")
        }
    }

    @Test func eventPagesAndTheTrajectory() async throws {
        let bed = Bed()
        try await bed.serve { call in
            let id = try await call.create()
            let events = (0..<5).map { (id: $0, json: #"{"id":\#($0),"source":"agent","action":"think"}"#) }
            bed.records.update(try #require(UUID(uuidString: id))) { $0.events = events }
            let page = try await call(.get, "/api/conversations/\(id)/events?start_id=1&limit=2")
            #expect(page.json["events"]?.arrayValue?.compactMap { $0["id"]?.intValue } == [1, 2])
            #expect(page.json["has_more"] == true)
            let last = try await call(.get, "/api/conversations/\(id)/events?reverse=true&limit=1")
            #expect(last.json["events"]?.arrayValue?.compactMap { $0["id"]?.intValue } == [4])
            let through = try await call(.get, "/api/conversations/\(id)/events?start_id=3&end_id=4")
            #expect(through.json["has_more"] == false)
            let trajectory = try await call(.get, "/api/conversations/\(id)/trajectory")
            #expect(trajectory.json["trajectory"]?.arrayValue?.compactMap { $0["id"]?.intValue } == [0, 1, 2, 3, 4])
        }
    }

    @Test func aDeletedConversationIsGoneAtOnceUnlessTheBrokerRefused() async throws {
        let bed = Bed()
        try await bed.serve { call in
            let kept = try await call.create()
            bed.commands.refusing.store(true, ordering: .relaxed)
            #expect(try await call(.delete, "/api/conversations/\(kept)").status == .serviceUnavailable)
            bed.commands.refusing.store(false, ordering: .relaxed)
            #expect(
                try await call(.get, "/api/conversations/\(kept)").status == .ok,
                "a refused delete changes nothing"
            )

            let id = try await call.create()
            #expect(try await call(.get, "/api/conversations/\(id)").status == .ok)  // the owner is cached
            #expect(try await call(.delete, "/api/conversations/\(id)").text == "true")
            // No worker ran: the row is still there, and hidden from every read and command.
            #expect(bed.records.count == 2)
            #expect(try await call(.get, "/api/conversations/\(id)").status == .notFound)
            #expect(try await call(.post, "/api/conversations/\(id)/message", #"{"message":"hi"}"#).status == .notFound)
            #expect(try await call(.get, "/api/conversations/\(id)/events").status == .notFound)
            #expect(try await call(.delete, "/api/conversations/\(id)").status == .notFound)
            let listed = try await call(.get, "/api/conversations").json["results"]?.arrayValue ?? []
            #expect(listed.compactMap { $0["conversation_id"]?.stringValue } == [kept])
            #expect(bed.commands.all.map(\.command) == [.start, .start, .delete])
        }
    }

    @Test func openHandsFieldsAreTypeCheckedAndLimitsRefuseWith403() async throws {
        var limits = UserLimits()
        limits.maxIterations = 30
        let bed = Bed(limits: limits)
        try await bed.serve { call in
            let id = try await call.create()
            let start = "/api/conversations/\(id)/start"
            #expect(try await call(.post, start, #"{"providers_set":["github"]}"#).status == .ok)
            #expect(try await call(.post, start, #"{"providers_set":null}"#).status == .ok)
            #expect(try await call(.post, start).status == .ok, "start's body is optional")
            #expect(try await call(.post, start, #"{"providers_set":"github"}"#).status == .unprocessableContent)
            let images = #"{"action":"message","args":{"content":"hi","image_urls":"one"}}"#
            #expect(try await call(.post, "/api/conversations/\(id)/events", images).status == .unprocessableContent)
            #expect(try await call(.get, "/api/conversations?limit=").status == .unprocessableContent)
            #expect(try await call(.get, "/api/conversations/\(id)/events?limit=").status == .unprocessableContent)
            // Limits count characters as JSON Schema does: code points (an emoji flag is two).
            let flags = String(repeating: "\u{1F1EB}\u{1F1F7}", count: 100)
            let title = JSONValue.object(["title": .string(flags)]).serialized
            #expect(try await call(.patch, "/api/conversations/\(id)", title).status == .ok)
            let longer = JSONValue.object(["title": .string(flags + "x")]).serialized
            #expect(try await call(.patch, "/api/conversations/\(id)", longer).status == .unprocessableContent)

            let over = try await call(.post, "/api/conversations", #"{"max_iterations":31}"#)
            #expect(over.status == .forbidden && over.code == "LIMIT$MAX_ITERATIONS", "\(over.text)")
            #expect(try await call(.post, "/api/conversations", #"{"max_iterations":30}"#).status == .ok)
        }
    }
}
