import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import HTTPTypes
import Postgres
import Synchronization
import Testing

@testable import Gateway

/// Cheap denial of service: open routes answered from a recent answer, wrong keys limited per address,
/// streams limited per user.
@Suite struct GatewayOpenRoutesTests {
    @Test func anOpenRouteComputesItsAnswerOncePerSecondHoweverManyAsk() async throws {
        let computed = Atomic<Int>(0)
        let answer = CachedAnswer(maxAge: .seconds(30))
        let compute: @Sendable () async -> CachedAnswer.Answer = {
            computed.add(1, ordering: .relaxed)
            return .init(status: .ok, contentType: "text/plain", body: Array("fine".utf8))
        }
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<50 { group.addTask { _ = await answer.response(compute) } }
        }
        #expect(computed.load(ordering: .relaxed) == 1, "50 callers at once share one computation")
        let fresh = CachedAnswer(maxAge: .zero)
        _ = await fresh.response(compute)
        _ = await fresh.response(compute)
        #expect(computed.load(ordering: .relaxed) == 3, "an answer older than maxAge is computed again")
    }

    @Test func wrongKeysFromOneAddressAreLimited() async throws {
        try await TestConversations.with { bed in
            let settings = TestConversations.gatewaySettings {
                $0.authFailureLimit = 3
                // Long enough that the key in use stays trusted however slow this machine is.
                $0.keyCacheTTL = .seconds(120)
            }
            try await bed.withGateway(settings: settings) { gateway in
                // A key in use before the guessing starts keeps working (it is trusted from the cache).
                #expect(try await gateway.request(.get, "/api/conversations").status == 200)
                for attempt in 0..<3 {
                    let wrong = "dh_" + String(repeating: "\(attempt)", count: 64)
                    #expect(try await gateway.request(.get, "/api/conversations", key: wrong).status == 401)
                }
                let limited = try await gateway.request(
                    .get,
                    "/api/conversations",
                    key: "dh_" + String(repeating: "f", count: 64)
                )
                #expect(limited.status == 429, "\(limited.text)")
                #expect((try? JSONValue(parsing: limited.body))?["code"] == "AUTH$TOO_MANY_FAILURES")
                #expect(Int(limited.headers["retry-after"] ?? "") ?? 0 > 0)
                #expect(try await gateway.request(.get, "/api/conversations").status == 200)
            }
        }
    }

    @Test func aUsersOpenStreamsAreLimited() async throws {
        try await TestConversations.with { bed in
            let model = bed.scripted([.reply("Hello.")])
            let settings = TestConversations.gatewaySettings { $0.maxStreamsPerUser = 1 }
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                try await bed.withGateway(settings: settings) { gateway in
                    let id = try await gateway.createConversation("hi", model: model)
                    _ = try await GatewayTests.waitForState(gateway, id, ["awaiting_user_input"])
                    // One stream held open; a second is refused, over SSE and over a WebSocket.
                    let first = try await gateway.http.stream(
                        HTTPRequest(
                            url: gateway.baseURL + "/api/conversations/\(id)/events/stream",
                            headers: ["Authorization": "Bearer \(gateway.key)"],
                            timeout: .seconds(60)
                        )
                    )
                    #expect(first.status == 200)
                    var events = first.body.makeAsyncIterator()
                    _ = try await events.next()  // the replay has begun: the stream counts
                    let second = try await gateway.http.execute(
                        HTTPRequest(
                            url: gateway.baseURL + "/api/conversations/\(id)/events/stream",
                            headers: ["Authorization": "Bearer \(gateway.key)"],
                            timeout: .seconds(5)
                        )
                    )
                    #expect(second.status == 429, "\(second.text)")
                    #expect((try? JSONValue(parsing: second.body))?["code"] == "STREAM$TOO_MANY")
                    // The refusal is a close frame, not a timeout: the default limit leaves room for a loaded machine
                    // (CI ran this beside the sandbox suites and a 10 s limit ran out before the close arrived). A
                    // socket let in gets the replay at once: it ends the wait, and the expectation says so.
                    let socket = try await gateway.webSocket(id) { !$0.events.isEmpty }
                    #expect(
                        socket.closeCode == 4029,
                        "the second stream was let in (\(socket.events.count) events, close \(socket.closeCode ?? 0))"
                    )
                    withExtendedLifetime(first) {}
                }
            }
        }
    }

    @Test func aLongTrajectoryIsWrittenInBatches() async throws {
        try await TestConversations.with { bed in
            try await bed.withGateway { gateway in
                let id = try await gateway.createConversation("hi")
                // 1,234 events: three batches, the last one partial.
                _ = try await bed.runtime.postgres.execute(
                    """
                    INSERT INTO events (conversation_id, id, source, kind, payload)
                    SELECT $1, n, 'agent', 'think',
                        jsonb_build_object('id', n, 'source', 'agent', 'action', 'think', 'args', jsonb_build_object('thought', 'n' || n))
                    FROM generate_series(0, 1233) AS n
                    """,
                    [.uuid(try #require(UUID(uuidString: id)))]
                )
                let trajectory = try await gateway.json(.get, "/api/conversations/\(id)/trajectory")
                guard case .array(let events)? = trajectory["trajectory"] else {
                    Issue.record("no trajectory array")
                    return
                }
                #expect(events.compactMap { $0["id"]?.intValue } == Array(0..<1234))
            }
        }
    }
}
