import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Gateway
import HTTPClient
import Messaging
import Postgres
import Testing

/// The gateway's HTTP API against real RabbitMQ, PostgreSQL, workers and process sandboxes.
@Suite struct GatewayTests {
    /// Polls `GET /api/conversations/{id}` until `agent_state` is one of `states`.
    static func waitForState(
        _ gateway: TestGateway,
        _ id: String,
        _ states: Set<String>,
        timeout: Duration = .seconds(60)
    ) async throws -> JSONValue {
        let describe: () async -> String = {
            "\((try? await gateway.json(.get, "/api/conversations/\(id)"))?["agent_state"] ?? .null)"
        }
        return try await eventuallyValue(
            "conversation \(id) in \(states.sorted())",
            timeout: timeout,
            interval: .milliseconds(25),
            describe: describe
        ) {
            let info = try await gateway.json(.get, "/api/conversations/\(id)")
            guard let state = info["agent_state"]?.stringValue, states.contains(state) else { return nil }
            return info
        }
    }

    static func ids(_ events: JSONValue?) -> [Int] {
        guard case .array(let items)? = events else { return [] }
        return items.compactMap { $0["id"]?.intValue }
    }

    @Test func aConversationCreatedOverHTTPRunsAndReadsBack() async throws {
        try await TestConversations.with { bed in
            let model = bed.scripted([.bash("echo from-the-sandbox"), .finish("Done."), .reply("Anything else?")])
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                try await bed.withGateway { gateway in
                    let created = try await gateway.json(
                        .post,
                        "/api/conversations",
                        body: ["initial_user_msg": "Say something.", "llm_model": .string(model), "max_iterations": 10]
                    )
                    #expect(created["status"] == "ok")
                    #expect(created["conversation_status"] == "STARTING")
                    #expect(created["message"] == .null)
                    let id = try #require(created["conversation_id"]?.stringValue)

                    let finished = try await Self.waitForState(gateway, id, ["finished", "error"])
                    #expect(finished["agent_state"] == "finished")
                    #expect(finished["conversation_id"]?.stringValue == id)
                    #expect(finished["conversation_version"] == "V0")
                    #expect(finished["trigger"] == "openhands_api")
                    #expect(finished["llm_model"]?.stringValue == model)
                    #expect(finished["title"]?.stringValue == "Conversation \(id.prefix(5))")
                    #expect(finished["session_api_key"] == .null)

                    let all = try await gateway.json(.get, "/api/conversations/\(id)/events?limit=100")
                    let ids = Self.ids(all["events"])
                    #expect(ids == Array(0..<ids.count))
                    #expect(all["has_more"] == false)
                    guard case .array(let events)? = all["events"] else {
                        Issue.record("no events array")
                        return
                    }
                    #expect(
                        events.contains {
                            $0["observation"] == "run"
                                && $0["content"]?.stringValue?.contains("from-the-sandbox") == true
                        }
                    )
                    #expect(events.contains { $0["action"] == "finish" })
                    #expect(events[1]["args"]?["content"] == "Say something.")

                    let page = try await gateway.json(.get, "/api/conversations/\(id)/events?start_id=2&limit=2")
                    #expect(Self.ids(page["events"]) == [2, 3])
                    #expect(page["has_more"] == true)
                    let window = try await gateway.json(.get, "/api/conversations/\(id)/events?start_id=1&end_id=3")
                    #expect(Self.ids(window["events"]) == [1, 2, 3])
                    #expect(window["has_more"] == false)
                    let newest = try await gateway.json(.get, "/api/conversations/\(id)/events?reverse=true&limit=3")
                    #expect(Self.ids(newest["events"]) == Array(ids.suffix(3).reversed()))
                    let trajectory = try await gateway.json(.get, "/api/conversations/\(id)/trajectory")
                    #expect(Self.ids(trajectory["trajectory"]) == ids)

                    #expect(
                        try await gateway.json(.patch, "/api/conversations/\(id)", body: ["title": "Renamed"]) == true
                    )
                    let listed = try await gateway.json(.get, "/api/conversations")
                    guard case .array(let results)? = listed["results"] else {
                        Issue.record("no results array")
                        return
                    }
                    #expect(results.map { $0["conversation_id"] } == [.string(id)])
                    #expect(results.first?["title"] == "Renamed")
                    #expect(listed["next_page_id"] == .null)

                    // A follow-up message runs the agent again; the reply waits for the user.
                    let sent = try await gateway.json(
                        .post,
                        "/api/conversations/\(id)/message",
                        body: ["message": "More?"]
                    )
                    #expect(sent == ["success": true])
                    let waiting = try await Self.waitForState(gateway, id, ["awaiting_user_input", "error"])
                    #expect(waiting["agent_state"] == "awaiting_user_input")
                    // A user action through POST …/events does the same.
                    let acted = try await gateway.json(
                        .post,
                        "/api/conversations/\(id)/events",
                        body: ["action": "change_agent_state", "args": ["agent_state": "stopped"]]
                    )
                    #expect(acted == ["success": true])
                    let stopped = try await Self.waitForState(gateway, id, ["stopped"])
                    #expect(stopped["status"] == "STOPPED")
                }
            }
        }
    }

    @Test func deckhandDevRunsTheWholeStackAndPrintsAKey() async throws {
        try await TestConversations.with { bed in
            let model = bed.scripted([.bash("echo from-dev"), .finish("Done.")])
            let output = bed.runtime.processRoot + "-dev.out"
            let log = bed.runtime.processRoot + "-dev.log"
            let process = try bed.runtime.launchDeckhand(
                [
                    "dev", "--namespace", bed.runtime.namespace, "--port", "0", "--user", "dev-\(UUID())",
                    "--runtime-api",
                ],
                variables: [
                    "DECKHAND_RUNTIME_API_PORT": "0",
                    "DECKHAND_RUNTIME_BACKEND": "process",
                    "DECKHAND_RUNTIME_WORKSPACE_ROOT": URL(fileURLWithPath: bed.runtime.processRoot)
                        .deletingLastPathComponent().path,
                    "DECKHAND_LLM_BASE_URL": bed.llmBaseURL,
                    "DECKHAND_LLM_API_KEY": "sk-test-dev-key",
                    // Each script of the fake model is a model of its own.
                    "DECKHAND_LLM_USER_MODELS": "*",
                    "DECKHAND_LOG_LEVEL": "notice",
                ],
                log: log,
                standardOutput: output
            )
            defer { if process.isRunning { process.terminate() } }
            var banner = ""
            let deadline = ContinuousClock.now + .seconds(60)
            while !(banner.contains("API key") && banner.contains("Runtime API:")) && process.isRunning
                && ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(50))
                banner = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            }
            let logged = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            let lines = banner.split(separator: "\n")
            let url = try #require(
                lines.first { $0.hasPrefix("Deckhand is running: ") }.map { String($0.split(separator: " ")[3]) },
                "no URL in: \(banner) \(logged)"
            )
            func firstKey(_ line: Substring?) -> Substring? {
                line?.split(separator: " ").first { $0.hasPrefix("dh_") && $0.count >= 67 }
            }
            let key = try #require(firstKey(lines.first { $0.contains("API key of user") }), "no key in: \(banner)")
            // The Runtime API beside it, with a key of its own that the gateway's does not replace.
            let apiLine = try #require(lines.first { $0.hasPrefix("Runtime API: ") }, "no runtime API in: \(banner)")
            let apiURL = String(apiLine.split(separator: " ")[2])
            let apiKey = String(try #require(firstKey(apiLine)).prefix(67))
            var list = HTTPRequest(url: apiURL + "/list")
            list.headers.replaceOrAdd(name: "X-API-Key", value: apiKey)
            let listed = try await bed.runtime.http.execute(list)
            #expect(listed.status == 200 && listed.text.contains("runtimes"), "\(listed.status) \(listed.text)")
            list.headers.replaceOrAdd(name: "X-API-Key", value: String(key.prefix(67)))
            #expect(try await bed.runtime.http.execute(list).status == 401, "a gateway key opens no runtime API")
            let document = try await bed.runtime.http.execute(HTTPRequest(url: url + "/openapi.json"))
            let gateway = TestGateway(
                baseURL: url,
                key: String(key.prefix(67)),
                http: bed.runtime.http,
                validator: try OpenAPIValidator(document: try JSONValue(parsing: document.body))
            )
            let id = try await gateway.createConversation("Go.", model: model)
            let finished = try await Self.waitForState(gateway, id, ["finished", "error"])
            #expect(finished["agent_state"] == "finished")
            #expect(!logged.contains(String(key.prefix(67))), "the key is printed once, never logged")

            process.terminate()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            let after = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            #expect(!after.contains("sk-test-dev-key"))
        }
    }

    @Test func metricsCountRequestsCommandsAndQueues() async throws {
        try await TestConversations.with { bed in
            try await bed.withGateway { gateway in
                let id = try await gateway.createConversation("hi")
                _ = try await gateway.json(.get, "/api/conversations/\(id)")
                _ = try await gateway.request(.get, "/api/conversations/\(id)", key: "")
                let response = try await gateway.request(.get, "/metrics", key: "")
                #expect(response.status == 200)
                #expect(response.headers["content-type"]?.hasPrefix("text/plain") == true)
                let text = response.text
                for line in [
                    #"deckhand_http_requests_total{route="/api/conversations",method="POST",status="200"} 1"#,
                    #"deckhand_http_requests_total{route="/api/conversations/{id}",method="GET",status="200"} 1"#,
                    #"deckhand_http_requests_total{route="/api/conversations/{id}",method="GET",status="401"} 1"#,
                    #"deckhand_gateway_commands_total{command="start",outcome="confirmed"} 1"#,
                    // No conversation worker runs: the start command waits in the queue.
                    #"deckhand_queue_messages{queue="\#(bed.runtime.topology.conversationQueue)"} 1"#,
                ] {
                    #expect(text.contains(line), "missing \(line) in:\n\(text)")
                }
                #expect(
                    text.contains(
                        "deckhand_http_request_duration_seconds_bucket{route=\"/api/conversations\",method=\"POST\""
                    )
                )
            }
        }
    }

    @Test func theOpenAPIDocumentCoversEveryRouteAndItsCheckCatchesDepartures() async throws {
        try await TestConversations.with { bed in
            try await bed.withGateway { gateway in
                let validator = try #require(gateway.validator)
                guard case .object(let paths)? = validator.document["paths"] else {
                    Issue.record("no paths")
                    return
                }
                #expect(
                    Set(paths.keys) == [
                        "/api/conversations", "/api/conversations/{id}", "/api/conversations/{id}/start",
                        "/api/conversations/{id}/stop", "/api/conversations/{id}/message",
                        "/api/conversations/{id}/events", "/api/conversations/{id}/events/stream",
                        "/api/conversations/{id}/trajectory", "/api/conversations/{id}/list-files",
                        "/api/conversations/{id}/select-file", "/api/conversations/{id}/upload-files",
                        "/api/conversations/{id}/zip-directory", "/sockets/events/{id}", "/alive", "/health",
                        "/metrics", "/openapi.json",
                    ]
                )
                let id = try await gateway.createConversation("hi")
                let info = try await gateway.request(.get, "/api/conversations/\(id)")
                let path = "/api/conversations/\(id)"
                func problem(_ body: JSONValue, status: Int = 200) -> String? {
                    validator.problem(
                        method: "GET",
                        path: path,
                        status: status,
                        contentType: "application/json",
                        body: Array(body.serialized.utf8)
                    )
                }
                let good = try JSONValue(parsing: info.body)
                #expect(problem(good) == nil)
                guard case .object(var fields) = good else { return }
                fields["agent_state"] = "dancing"
                #expect(problem(.object(fields))?.contains("agent_state") == true)
                fields["agent_state"] = "running"
                fields["num_connections"] = "one"
                #expect(problem(.object(fields))?.contains("num_connections") == true)
                fields["num_connections"] = 0
                fields["surprise"] = true
                #expect(problem(.object(fields))?.contains("surprise") == true)
                fields["surprise"] = nil
                fields["conversation_id"] = nil
                #expect(problem(.object(fields))?.contains("conversation_id") == true)
                #expect(problem(good, status: 418)?.contains("418") == true)
                #expect(
                    validator.problem(method: "GET", path: path, status: 200, contentType: "text/html", body: [])?
                        .contains("content type") == true
                )
            }
        }
    }

    @Test func aDeletedConversationIsGoneAtOnceBeforeAnyWorkerActs() async throws {
        try await TestConversations.with { bed in
            // No conversation worker: the delete command only waits in the queue.
            try await bed.withGateway { gateway in
                let kept = try await gateway.createConversation("stays")
                let id = try await gateway.createConversation("goes")
                #expect(try await gateway.request(.delete, "/api/conversations/\(id)").text == "true")
                #expect(try await gateway.request(.get, "/api/conversations/\(id)").status == 404)
                #expect(try await gateway.request(.get, "/api/conversations/\(id)/events").status == 404)
                let message = try await gateway.request(
                    .post,
                    "/api/conversations/\(id)/message",
                    body: #"{"message":"x"}"#
                )
                #expect(message.status == 404)
                let listed = try await gateway.json(.get, "/api/conversations")["results"]?.arrayValue ?? []
                #expect(listed.compactMap { $0["conversation_id"]?.stringValue } == [kept])
                // The row waits for the worker that removes it with its sandbox.
                let rows = try await bed.runtime.postgres.query(
                    "SELECT deleting FROM conversations WHERE id = $1",
                    [.uuid(try #require(UUID(uuidString: id)))]
                )
                #expect(try rows.first?.decode(Bool.self, "deleting") == true)
            }
        }
    }

    @Test func everyRouteNeedsAKeyAndOnlyTheOwnerSeesAConversation() async throws {
        try await TestConversations.with { bed in
            try await bed.withGateway { gateway in
                let id = try await gateway.createConversation("hi")
                let other = try await APIKeyStore(postgres: bed.runtime.postgres).create(user: "other-\(UUID())").key

                let routes: [(HTTPRequest.Method, String, String?)] = [
                    ("GET", "/api/conversations/\(id)", nil),
                    ("PATCH", "/api/conversations/\(id)", #"{"title":"x"}"#),
                    ("DELETE", "/api/conversations/\(id)", nil),
                    ("POST", "/api/conversations/\(id)/start", "{}"),
                    ("POST", "/api/conversations/\(id)/stop", nil),
                    ("POST", "/api/conversations/\(id)/message", #"{"message":"x"}"#),
                    ("POST", "/api/conversations/\(id)/events", #"{"action":"message","args":{"content":"x"}}"#),
                    ("GET", "/api/conversations/\(id)/events", nil),
                    ("GET", "/api/conversations/\(id)/trajectory", nil),
                ]
                for (method, path, body) in routes {
                    for key in ["", "dh_" + String(repeating: "0", count: 64), "not-a-key"] {
                        let response = try await gateway.request(method, path, body: body, key: key)
                        #expect(response.status == 401, "\(method) \(path) with key `\(key)`")
                        let error = try JSONValue(parsing: response.body)
                        #expect(error["code"] == "AUTH$UNAUTHORIZED")
                    }
                    let response = try await gateway.request(method, path, body: body, key: other)
                    #expect(response.status == 404, "\(method) \(path) as another user: \(response.text)")
                    #expect(try JSONValue(parsing: response.body)["code"] == "CONVERSATION$NOT_FOUND")
                }
                for path in ["/api/conversations", "/api/conversations?limit=5"] {
                    #expect(try await gateway.request(.get, path, key: "").status == 401)
                    let theirs = try await gateway.json(.get, path, key: other)
                    #expect(theirs["results"] == [])
                }
                #expect(try await gateway.request(.post, "/api/conversations", body: "{}", key: "").status == 401)
                // The owner still has it, untouched by the other user's attempts.
                let mine = try await gateway.json(.get, "/api/conversations/\(id)")
                #expect(mine["title"]?.stringValue?.hasPrefix("Conversation ") == true)
                // The open routes need no key.
                #expect(try await gateway.request(.get, "/alive", key: "").status == 200)
                let health = try await gateway.request(.get, "/health", key: "")
                #expect(health.status == 200, "\(health.text)")
                let detail = try JSONValue(parsing: health.body)
                #expect(detail["dependencies"]?["rabbitmq"]?["status"] == "ok")
                #expect(detail["dependencies"]?["postgresql"]?["status"] == "ok")
                // A revoked key stops working (once the key cache's 200 ms here have passed).
                let keys = APIKeyStore(postgres: bed.runtime.postgres)
                #expect(try await keys.revoke(String(gateway.key.prefix(12))))
                try await eventually("the revoked key is refused") {
                    try await gateway.request(.get, "/api/conversations/\(id)").status == 401
                }
            }
        }
    }

    @Test func singleUserModeStillNeedsAKeyAndServesLoopbackOnly() async throws {
        try await TestConversations.with { bed in
            let user = "solo-\(UUID().uuidString.prefix(8))"
            let settings = TestConversations.gatewaySettings {
                $0.auth = .singleUser
                $0.singleUser = user
            }
            try await bed.withGateway(settings: settings) { gateway in
                // A page the user visits can reach 127.0.0.1 too: without the key nothing is served.
                #expect(try await gateway.request(.get, "/api/conversations", key: "").status == 401)
                let created = try await gateway.request(
                    .post,
                    "/api/conversations",
                    body: #"{"initial_user_msg": "hi"}"#,
                    key: ""
                )
                #expect(created.status == 401)
                let id = try await gateway.createConversation("hi")
                #expect(try await gateway.request(.get, "/api/conversations/\(id)").status == 200)
                let made = try await bed.runtime.postgres.query("SELECT 1 FROM users WHERE name = $1", [.text(user)])
                #expect(made.count == 1, "the single user is made at start")
            }
            let exposed = TestConversations.gatewaySettings {
                $0.auth = .singleUser
                $0.host = "0.0.0.0"
            }
            await #expect(throws: DeckhandError.self, "single_user refuses a non-loopback address") {
                try await bed.withGateway(settings: exposed) { _ in }
            }
        }
    }

    @Test func badInputGetsAClearErrorAndCreatesNothing() async throws {
        try await TestConversations.with { bed in
            let settings = TestConversations.gatewaySettings { $0.maxBodyBytes = 2048 }
            try await bed.withGateway(settings: settings) { gateway in
                let cases: [(HTTPRequest.Method, String, String?, Int, String, String?)] = [
                    ("POST", "/api/conversations", "{not json", 400, "REQUEST$MALFORMED_JSON", nil),
                    ("POST", "/api/conversations", "[1]", 422, "REQUEST$INVALID_FIELD", "object"),
                    (
                        "POST", "/api/conversations", #"{"initial_user_msg":"x","colour":"red"}"#, 422,
                        "REQUEST$INVALID_FIELD", "colour"
                    ),
                    (
                        "POST", "/api/conversations", #"{"max_iterations":"ten"}"#, 422, "REQUEST$INVALID_FIELD",
                        "max_iterations"
                    ),
                    (
                        "POST", "/api/conversations", #"{"max_iterations":0}"#, 422, "REQUEST$INVALID_FIELD",
                        "max_iterations"
                    ),
                    ("POST", "/api/conversations", #"{"runtime":"kubernetes"}"#, 403, "LIMIT$BACKEND", "runtime"),
                    (
                        "POST", "/api/conversations", #"{"replay_json":"{}"}"#, 422, "REQUEST$INVALID_FIELD",
                        "replay_json"
                    ),
                    (
                        "POST", "/api/conversations",
                        #"{"initial_user_msg":""# + String(repeating: "a", count: 4096) + "\"}", 413,
                        "REQUEST$TOO_LARGE", nil
                    ),
                    // Not an id this API makes: no such conversation, like any unknown id.
                    ("GET", "/api/conversations/12345", nil, 404, "CONVERSATION$NOT_FOUND", nil),
                    ("POST", "/api/conversations", nil, 422, "REQUEST$BODY_REQUIRED", nil),
                    (
                        "POST", "/api/conversations", #"{"conversation_id":"xyz"}"#, 422, "REQUEST$INVALID_FIELD",
                        "conversation_id"
                    ),
                    ("POST", "/api/conversations", #"{"mcp_config":[1]}"#, 422, "REQUEST$INVALID_FIELD", "mcp_config"),
                    ("GET", "/api/conversations/\(UUID())", nil, 404, "CONVERSATION$NOT_FOUND", nil),
                    (
                        "GET", "/api/conversations/\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))", nil,
                        404, "CONVERSATION$NOT_FOUND", nil
                    ),
                    ("GET", "/api/conversations?limit=0", nil, 422, "REQUEST$INVALID_FIELD", "limit"),
                    ("GET", "/api/conversations?limit=101", nil, 422, "REQUEST$INVALID_FIELD", "limit"),
                    // A page_id this API did not return names no page (a valid string, so not a 422).
                    ("GET", "/api/conversations?page_id=bogus", nil, 404, "REQUEST$UNKNOWN_PAGE", "page_id"),
                    ("GET", "/sockets/events/\(UUID())", nil, 404, "CONVERSATION$NOT_FOUND", nil),
                    ("GET", "/api/nothing-here", nil, 404, "ROUTE$NOT_FOUND", nil),
                    // A route that exists with other methods: 405, naming them (and in `Allow`).
                    ("PUT", "/api/conversations", "{}", 405, "ROUTE$METHOD_NOT_ALLOWED", "GET, POST"),
                    ("TRACE", "/health", nil, 405, "ROUTE$METHOD_NOT_ALLOWED", "GET"),
                    ("DELETE", "/api/conversations/\(UUID())/start", nil, 405, "ROUTE$METHOD_NOT_ALLOWED", "POST"),
                ]
                for (method, path, body, status, code, mention) in cases {
                    let response = try await gateway.request(method, path, body: body)
                    #expect(response.status == status, "\(method) \(path) \(body?.prefix(60) ?? ""): \(response.text)")
                    let error = try JSONValue(parsing: response.body)
                    #expect(error["status"] == "error")
                    #expect(error["code"]?.stringValue == code, "\(path): \(response.text)")
                    #expect(response.headers["content-type"] == "application/json")
                    if let mention {
                        #expect(error["message"]?.stringValue?.contains(mention) == true, "\(response.text)")
                    }
                    if status == 405 { #expect(response.headers["allow"] == mention, "\(path)") }
                }
                let id = try await gateway.createConversation("ok")
                for (path, mention) in [
                    ("events?limit=101", "limit"), ("events?start_id=-1", "start_id"),
                    ("events?reverse=maybe", "reverse"),
                    // The last event id of a stream: one integer, whichever way it is sent.
                    ("events/stream?latest_event_id=null", "latest_event_id"),
                    ("events/stream?latest_event_id=1&latest_event_id=2", "latest_event_id"),
                ] {
                    let response = try await gateway.request(.get, "/api/conversations/\(id)/\(path)")
                    #expect(response.status == 422, "\(path): \(response.text)")
                    #expect(response.text.contains(mention))
                }
                let badHeader = try await gateway.request(
                    .get,
                    "/api/conversations/\(id)/events/stream?latest_event_id=x",
                    headers: [("Last-Event-ID", "3")]
                )
                #expect(badHeader.status == 422, "a bad query is refused even beside a good header: \(badHeader.text)")
                // The socket's path without an upgrade: what the upgrade checks, then 426 naming the protocol.
                let badSocket = try await gateway.request(.get, "/sockets/events/\(id)?latest_event_id=null")
                #expect(badSocket.status == 422, "\(badSocket.text)")
                let plain = try await gateway.request(.get, "/sockets/events/\(id)")
                #expect(plain.status == 426, "\(plain.text)")
                #expect((try? JSONValue(parsing: plain.body))?["code"] == "REQUEST$UPGRADE_REQUIRED")
                #expect(plain.headers["upgrade"] == "websocket")
                let wrongState = try await gateway.request(
                    .post,
                    "/api/conversations/\(id)/events",
                    body: #"{"action":"change_agent_state","args":{"agent_state":"user_confirmed"}}"#
                )
                #expect(wrongState.status == 409)
                // Only the one good request created a conversation.
                let listed = try await gateway.json(.get, "/api/conversations")
                #expect(listed["results"].map { if case .array(let items) = $0 { items.count } else { -1 } } == 1)
            }
        }
    }

    /// What OpenHands' clients send is accepted: its frontend's `providers_set` on start, and every field of
    /// its `InitSessionRequest` (the conversation's id chosen by the caller; the rest accepted and ignored).
    @Test func openHandsRequestFieldsAreAccepted() async throws {
        try await TestConversations.with { bed in
            // No conversation worker: nothing acts on the commands, so answers show the state as it stands.
            try await bed.withGateway { gateway in
                let chosen = UUID()
                let body: JSONValue = [
                    "conversation_id": .string(chosen.uuidString.lowercased().replacingOccurrences(of: "-", with: "")),
                    "initial_user_msg": "Fix the tests.",
                    "suggested_task": [
                        "git_provider": "github", "task_type": "FAILING_CHECKS", "repo": "a/b", "issue_number": 1,
                        "title": "CI",
                    ],
                    "create_microagent": nil, "mcp_config": ["sse_servers": [], "stdio_servers": []],
                ]
                let created = try await gateway.json(.post, "/api/conversations", body: body)
                #expect(created["conversation_id"]?.stringValue.flatMap(UUID.init(uuidString:)) == chosen)
                let again = try await gateway.request(.post, "/api/conversations", body: body.serialized)
                #expect(again.status == 409, "\(again.text)")
                #expect((try? JSONValue(parsing: again.body))?["code"] == "CONVERSATION$EXISTS")

                let id = try #require(created["conversation_id"]?.stringValue)
                let started = try await gateway.json(
                    .post,
                    "/api/conversations/\(id)/start",
                    body: ["providers_set": ["github"]]
                )
                #expect(started["status"] == "ok")
                // Stop answers the status as it stands: the stop is queued, no worker has acted on it.
                let stopped = try await gateway.json(.post, "/api/conversations/\(id)/stop", body: [:])
                #expect(stopped["conversation_status"] == "STARTING", "\(stopped)")
                let unknown = try await gateway.request(.post, "/api/conversations/\(id)/start", body: #"{"x": 1}"#)
                #expect(unknown.status == 422, "unknown fields are still refused: \(unknown.text)")
            }
        }
    }

    @Test func conversationsPageNewestFirstWithAnOpaqueCursor() async throws {
        try await TestConversations.with { bed in
            try await bed.withGateway { gateway in
                var created: [String] = []
                for index in 0..<5 {
                    let answer = try await gateway.json(
                        .post,
                        "/api/conversations",
                        body: ["initial_user_msg": .string("task \(index)")]
                    )
                    created.append(try #require(answer["conversation_id"]?.stringValue))
                }
                var seen: [String] = []
                var cursor: String?
                var pages = 0
                repeat {
                    let query = cursor.map { "&page_id=\($0)" } ?? ""
                    let page = try await gateway.json(.get, "/api/conversations?limit=2\(query)")
                    guard case .array(let results)? = page["results"] else { break }
                    seen += results.compactMap { $0["conversation_id"]?.stringValue }
                    cursor = page["next_page_id"]?.stringValue
                    pages += 1
                } while cursor != nil && pages < 10
                #expect(pages == 3)
                #expect(seen == created.reversed())
            }
        }
    }
}
