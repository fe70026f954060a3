import AMQP
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import HTTPClient
import Messaging
import Testing

/// One trace follows the work: a caller's `traceparent` into the gateway's command, a command into what its
/// handler sends (`Traceparent.current`), each hop a span of its own.
@Suite struct TraceContextTests {
    static let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    /// The trace id and span id of `traceparent`.
    static func parts(_ traceparent: String?) -> (trace: String, span: String)? {
        guard let traceparent, let trace = Traceparent.traceID(of: traceparent) else { return nil }
        return (trace, String(traceparent.split(separator: "-")[2]))
    }

    @Test func theGatewayContinuesTheCallersTraceIntoItsCommand() async throws {
        try await TestConversations.with { bed in
            // No conversation worker: the `start` command waits in the queue, where the test takes it.
            try await bed.withGateway { gateway in
                let created = try await gateway.request(
                    .post,
                    "/api/conversations",
                    body: #"{"initial_user_msg": "hi"}"#,
                    headers: [("traceparent", Self.caller)]
                )
                #expect(created.status == 200, "\(created.text)")
                let consumer = try await bed.runtime.connection.consume(
                    queue: bed.runtime.topology.conversationQueue,
                    prefetch: 1
                )
                var iterator = consumer.makeAsyncIterator()
                let start = try #require(try await iterator.next())
                start.ack()
                await consumer.cancel()
                let sent = try #require(Self.parts(start.traceparent), "\(start.traceparent ?? "none")")
                #expect(sent.trace == "4bf92f3577b34da6a3ce929d0e0e4736")
                #expect(sent.span != "00f067aa0ba902b7", "a span of the gateway's own")
                // It says when it was sent, in milliseconds: the wait its consumer measures.
                let sentAt = try #require(start.properties.headers[AMQPMessage.sentAtHeader]?.intValue)
                let age = Date().timeIntervalSince1970 * 1000 - Double(sentAt)
                #expect(age >= 0 && age < 60_000, "sent \(age) ms ago")
            }
        }
    }

    @Test func aWorkersCommandsContinueTheTraceOfTheCommandItHandles() async throws {
        try await TestRuntime.with { runtime in
            let worker = try runtime.makeWorker()
            try await running(worker) {
                let conversation = UUID()
                let parent = Traceparent.make()
                try await Traceparent.$current.withValue(parent) { _ = try await runtime.provision(conversation) }
                let reply = try await runtime.replyDelivery(for: conversation)
                #expect(reply.properties.type == ConversationCommand.sandboxReady.rawValue)
                let sent = try #require(Self.parts(reply.traceparent), "\(reply.traceparent ?? "none")")
                #expect(sent.trace == Traceparent.traceID(of: parent))
                #expect(sent.span != Self.parts(parent)?.span)
            }
        }
    }

    /// One trace from the caller to the sandbox: a conversation created with the caller's `traceparent` runs
    /// its command in a sandbox whose log names the caller's trace id on that action.
    @Test func theCallersTraceReachesTheSandboxsLog() async throws {
        try await TestConversations.with { bed in
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                try await bed.withGateway { gateway in
                    let model = "traced-\(UUID().uuidString.prefix(8))"
                    bed.llm.register(.init(steps: [.bash("echo traced"), .finish("Done.")]), model: model)
                    let created = try await gateway.request(
                        .post,
                        "/api/conversations",
                        body: #"{"initial_user_msg": "Go.", "llm_model": "\#(model)"}"#,
                        headers: [("traceparent", Self.caller)]
                    )
                    let id = try #require(
                        try created.decode(JSONValue.self)["conversation_id"]?.stringValue.flatMap(
                            UUID.init(uuidString:)
                        )
                    )
                    try await bed.waitFor(id, [.finished])
                    let sandbox = try #require(try await bed.runtime.store.liveSandbox(conversation: id)?.reference)
                    let log = try String(contentsOfFile: sandbox + "/sandbox.log", encoding: .utf8)
                    let trace = try #require(Traceparent.traceID(of: Self.caller))
                    let actions = log.split(separator: "\n").filter { $0.contains("action answered") }
                    #expect(!actions.isEmpty, "\(log.suffix(2000))")
                    #expect(actions.allSatisfy { $0.contains("trace.id=\(trace)") }, "\(actions)")
                }
            }
        }
    }
}
