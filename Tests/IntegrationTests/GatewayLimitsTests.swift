import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import Gateway
import HTTPClient
import Postgres
import Testing

/// The operator decides, users choose within it; and a web page cannot drive a gateway it was not allowed to.
@Suite struct GatewayLimitsTests {
    /// The code of an error answer.
    static func code(_ response: HTTPResponse) -> String? {
        (try? JSONValue(parsing: response.body))?["code"]?.stringValue
    }

    static func conversations(_ bed: TestConversations) async throws -> Int {
        let rows = try await bed.runtime.postgres.query("SELECT count(*) AS n FROM conversations", [])
        return try rows.first?.decode(Int.self, "n") ?? -1
    }

    /// The status of a WebSocket upgrade request from a page of `origin`, sent on a new connection (the server
    /// upgrades only a connection's first request) by bash, which reads the status line and hangs up.
    static func upgradeStatus(_ url: String, origin: String) throws -> Int {
        guard let parsed = URLComponents(string: url), let port = parsed.port else { return -1 }
        let target = parsed.percentEncodedPath + (parsed.percentEncodedQuery.map { "?" + $0 } ?? "")
        let request = [
            "GET \(target) HTTP/1.1", "Host: 127.0.0.1:\(port)", "Origin: \(origin)", "Connection: Upgrade",
            "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "", "",
        ].joined(separator: "\r\n")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = [
            "20", "/bin/bash", "-c",
            "exec 3<>/dev/tcp/127.0.0.1/\(port) && printf '%s' \"$1\" >&3 && head -n 1 <&3", "bash", request,
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // "HTTP/1.1 101 Switching Protocols"
        let fields = String(decoding: output, as: UTF8.self).split(separator: " ")
        return fields.count > 1 ? Int(fields[1]) ?? -1 : -1
    }

    @Test func callersChooseWithinTheOperatorsLimits() async throws {
        try await TestConversations.with { bed in
            let limits = TestConversations.userLimits {
                $0.defaultBackend = .docker
                $0.userBackends = []
                $0.maxIterations = 30
                $0.maxBudget = 2
                $0.defaultModel = "house-model"
                $0.userModels = ["cheap-model", "free-model"]
                $0.prices = PriceTable(["house-model": .init(promptPerMillion: 1, completionPerMillion: 2)])
                $0.prices.prices["cheap-model"] = .init(promptPerMillion: 0.1, completionPerMillion: 0.2)
            }
            try await bed.withGateway(limits: limits) { gateway in
                let refusals: [(String, Int, String, String)] = [
                    (#"{"runtime": "process"}"#, 403, "LIMIT$BACKEND", "docker"),
                    (#"{"runtime": "modal"}"#, 403, "LIMIT$BACKEND", "docker"),
                    (#"{"max_iterations": 31}"#, 403, "LIMIT$MAX_ITERATIONS", "30"),
                    (#"{"max_budget_per_task": 2.5}"#, 403, "LIMIT$MAX_BUDGET", "2"),
                    (#"{"llm_model": "gpt-5"}"#, 403, "LIMIT$MODEL", "cheap-model"),
                    // Under the operator's budget, a model without a price would be free: refused instead.
                    (#"{"llm_model": "free-model"}"#, 403, "LIMIT$UNPRICED_MODEL", "free-model"),
                ]
                for (body, status, code, named) in refusals {
                    let answer = try await gateway.request(.post, "/api/conversations", body: body)
                    #expect(answer.status == status, "\(body): \(answer.status) \(answer.text)")
                    #expect(Self.code(answer) == code, "\(body): \(answer.text)")
                    #expect(answer.text.contains(named), "\(body) names \(named): \(answer.text)")
                }
                #expect(try await Self.conversations(bed) == 0, "a refused conversation leaves nothing behind")

                // Within the limits: accepted, and the row holds what was granted.
                let accepted = try await gateway.json(
                    .post,
                    "/api/conversations",
                    body: [
                        "runtime": "docker", "max_iterations": 12, "max_budget_per_task": 1.5,
                        "llm_model": "cheap-model",
                    ]
                )
                let id = try #require(accepted["conversation_id"]?.stringValue.flatMap(UUID.init(uuidString:)))
                let plain = try await gateway.json(.post, "/api/conversations", body: [:])
                let other = try #require(plain["conversation_id"]?.stringValue.flatMap(UUID.init(uuidString:)))
                let rows = try await bed.runtime.postgres.query(
                    "SELECT id, max_iterations, max_budget_per_task, llm_model, runtime FROM conversations",
                    []
                )
                for row in rows {
                    let rowID = try row.decode(UUID.self, "id")
                    if rowID == id {
                        #expect(try row.decode(Int.self, "max_iterations") == 12)
                        #expect(try row.decode(Double?.self, "max_budget_per_task") == 1.5)
                        #expect(try row.decode(String?.self, "llm_model") == "cheap-model")
                        #expect(try row.decode(String?.self, "runtime") == "docker")
                    } else {
                        #expect(rowID == other)
                        // No choice: the operator's cap is the conversation's limit, its budget the operator's.
                        #expect(try row.decode(Int.self, "max_iterations") == 30)
                        #expect(try row.decode(Double?.self, "max_budget_per_task") == 2)
                        #expect(try row.decode(String?.self, "llm_model") == nil)
                    }
                }
            }
        }
    }

    @Test func aUsersConversationsAtWorkAreCapped() async throws {
        try await TestConversations.with { bed in
            let limits = TestConversations.userLimits { $0.maxRunningConversations = 2 }
            // No conversation worker: each new conversation stays `loading`, at work from the cap's view.
            try await bed.withGateway(limits: limits) { gateway in
                _ = try await gateway.createConversation("one")
                _ = try await gateway.createConversation("two")
                let third = try await gateway.request(.post, "/api/conversations", body: #"{"initial_user_msg":"3"}"#)
                #expect(third.status == 429, "\(third.text)")
                #expect(Self.code(third) == "LIMIT$RUNNING_CONVERSATIONS")
                #expect(try await Self.conversations(bed) == 2)

                // Another user has caps of their own.
                let stranger = try await APIKeyStore(postgres: bed.runtime.postgres).create(user: "s-\(UUID())").key
                let theirs = try await gateway.request(.post, "/api/conversations", body: "{}", key: stranger)
                #expect(theirs.status == 200, "\(theirs.text)")
            }
        }
    }

    /// A message, a resume or a start wakes a conversation as a new one would start: each is held to the same
    /// cap, on every path a client has (REST, a user action, a WebSocket frame); a command that wakes nothing
    /// is not.
    @Test func aWakeIsHeldToTheSameCaps() async throws {
        try await TestConversations.with { bed in
            let limits = TestConversations.userLimits { $0.maxRunningConversations = 1 }
            // No conversation worker: states are set in the table, as a worker would have left them.
            try await bed.withGateway(limits: limits) { gateway in
                let asleep = try await gateway.createConversation("one")
                try await Self.setState(bed, asleep, "stopped")
                let busy = try await gateway.createConversation("two")
                let refused: [(String, String)] = [
                    ("/api/conversations/\(asleep)/message", #"{"message": "wake up"}"#),
                    ("/api/conversations/\(asleep)/events", #"{"action": "message", "args": {"content": "hi"}}"#),
                    ("/api/conversations/\(asleep)/start", "{}"),
                ]
                for (path, body) in refused {
                    let answer = try await gateway.request(.post, path, body: body)
                    #expect(answer.status == 429, "\(path): \(answer.status) \(answer.text)")
                    #expect(Self.code(answer) == "LIMIT$RUNNING_CONVERSATIONS", "\(path): \(answer.text)")
                }
                let frame = #"{"action": "message", "args": {"content": "over the socket"}}"#
                let socket = try await gateway.webSocket(asleep, frames: [frame], timeout: .seconds(20)) { seen in
                    seen.other.contains { $0["type"] == "error" }
                }
                let error = try #require(socket.other.first { $0["type"] == "error" })
                #expect(error["code"] == "LIMIT$RUNNING_CONVERSATIONS", "\(error)")

                try await Self.setState(bed, asleep, "paused")
                let resume = try await gateway.request(
                    .post,
                    "/api/conversations/\(asleep)/events",
                    body: #"{"action": "change_agent_state", "args": {"agent_state": "running"}}"#
                )
                #expect(resume.status == 429, "resuming a paused conversation: \(resume.text)")

                // What wakes nothing passes: a message to the conversation at work, a stop.
                let toBusy = try await gateway.request(
                    .post,
                    "/api/conversations/\(busy)/message",
                    body: #"{"message": "more"}"#
                )
                #expect(toBusy.status == 200, "\(toBusy.text)")
                let stop = try await gateway.request(.post, "/api/conversations/\(asleep)/stop", body: "{}")
                #expect(stop.status == 200, "\(stop.text)")

                // Once the other conversation rests, the first may wake.
                try await Self.setState(bed, busy, "awaiting_user_input")
                let woken = try await gateway.request(
                    .post,
                    "/api/conversations/\(asleep)/message",
                    body: #"{"message": "now"}"#
                )
                #expect(woken.status == 200, "\(woken.text)")
            }
        }
    }

    /// Sets a conversation's agent state in its row.
    static func setState(_ bed: TestConversations, _ id: String, _ state: String) async throws {
        let updated = try await bed.runtime.postgres.execute(
            "UPDATE conversations SET agent_state = $2 WHERE id = $1",
            [.uuid(try #require(UUID(uuidString: id))), .text(state)]
        )
        #expect(updated == 1)
    }

    @Test func aUsersLiveSandboxesAreCapped() async throws {
        try await TestConversations.with { bed in
            let limits = TestConversations.userLimits { $0.maxLiveSandboxes = 1 }
            let model = bed.scripted([.reply("Hello.")])
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                try await bed.withGateway(limits: limits) { gateway in
                    let id = try await gateway.createConversation("hi", model: model)
                    _ = try await GatewayTests.waitForState(gateway, id, ["awaiting_user_input"])
                    let second = try await gateway.request(.post, "/api/conversations", body: "{}")
                    #expect(second.status == 429, "\(second.text)")
                    #expect(Self.code(second) == "LIMIT$LIVE_SANDBOXES")
                }
            }
        }
    }

    @Test func aWebPageCannotDriveTheGateway() async throws {
        try await TestConversations.with { bed in
            for auth in GatewaySettings.AuthMode.allCases {
                let settings = TestConversations.gatewaySettings {
                    $0.auth = auth
                    $0.allowedOrigins = ["https://app.example.com"]
                }
                try await bed.withGateway(settings: settings) { gateway in
                    // A form or fetch() without preflight: text/plain. Refused, and nothing is created.
                    let plain = try await gateway.request(
                        .post,
                        "/api/conversations",
                        body: #"{"initial_user_msg": "rm -rf ~"}"#,
                        headers: [("Content-Type", "text/plain")]
                    )
                    #expect(plain.status == 415, "\(auth): \(plain.text)")
                    #expect(Self.code(plain) == "REQUEST$NOT_JSON")
                    // A foreign page that got a key somehow still cannot call.
                    let foreign = try await gateway.request(
                        .post,
                        "/api/conversations",
                        body: #"{"initial_user_msg": "hi"}"#,
                        headers: [("Origin", "https://evil.example")]
                    )
                    #expect(foreign.status == 403, "\(auth): \(foreign.text)")
                    #expect(Self.code(foreign) == "REQUEST$FORBIDDEN_ORIGIN")
                    let framed = try await gateway.request(
                        .get,
                        "/api/conversations",
                        headers: [("Origin", "null")]
                    )
                    #expect(framed.status == 403, "a sandboxed frame or a file: \(framed.status)")
                    #expect(try await Self.conversations(bed) == 0)
                    // Preflights are outside the API's description: sent around the checking client.
                    func preflightFrom(_ origin: String) async throws -> HTTPResponse {
                        try await gateway.http.execute(
                            HTTPRequest(
                                method: "OPTIONS",
                                url: gateway.baseURL + "/api/conversations",
                                headers: ["Origin": origin, "Access-Control-Request-Method": "POST"],
                                timeout: .seconds(10)
                            )
                        )
                    }
                    let preflight = try await preflightFrom("https://evil.example")
                    #expect(preflight.status == 403)
                    #expect(preflight.headers["access-control-allow-origin"] == nil)

                    // A WebSocket upgrade from a foreign page: refused before any stream opens. (curl on a
                    // connection of its own: the server upgrades only a connection's first request.)
                    let id = try await gateway.createConversation("hi")
                    let upgrade = try Self.upgradeStatus(
                        gateway.baseURL + "/sockets/events/\(id)?api_key=\(gateway.key)",
                        origin: "https://evil.example"
                    )
                    // (Hummingbird answers a refused upgrade with 400, whatever the middleware threw.)
                    #expect((400..<500).contains(upgrade), "\(auth): WebSocket upgrade got \(upgrade)")
                    let own = try Self.upgradeStatus(
                        gateway.baseURL + "/sockets/events/\(id)?api_key=\(gateway.key)",
                        origin: "https://app.example.com"
                    )
                    #expect(own == 101, "\(auth): WebSocket upgrade from the allowed origin got \(own)")

                    // The allowed origin: CORS answered, requests served.
                    let allowed = try await gateway.request(
                        .get,
                        "/api/conversations/\(id)",
                        headers: [("Origin", "https://app.example.com")]
                    )
                    #expect(allowed.status == 200)
                    #expect(allowed.headers["access-control-allow-origin"] == "https://app.example.com")
                    let allowedPreflight = try await preflightFrom("https://app.example.com")
                    #expect(allowedPreflight.status == 204)
                    #expect(allowedPreflight.headers["access-control-allow-headers"]?.contains("Authorization") == true)
                }
                _ = try await bed.runtime.postgres.execute("DELETE FROM conversations", [])
            }
        }
    }
}
