import AMQP
import DeckhandCore
import DeckhandTesting
import Foundation
import Messaging
import Testing

/// `deckhand dlq` and the `DeadLetterQueue` under it, on messages the broker itself dead-lettered.
@Suite struct DeadLetterTests {
    /// A command a handler gave up on, as CommandBus.settle leaves it: published to the runtime queue on its
    /// fifth attempt, taken and rejected, so that the queue dead-letters it (with the broker's `x-death`).
    static func kill(_ runtime: TestRuntime, id: String, type: String, body: String) async throws {
        let message = AMQPMessage(json: Array(body.utf8), type: type, messageID: id, headers: ["x-attempt": 5])
        try await runtime.connection.publish(message, exchange: "", routingKey: runtime.topology.runtimeQueue)
        let consumer = try await runtime.connection.consume(queue: runtime.topology.runtimeQueue, prefetch: 1)
        for try await delivery in consumer {
            delivery.reject()
            break
        }
        await consumer.cancel()
    }

    static func deadCount(_ runtime: TestRuntime, is expected: Int) async throws {
        let dead = DeadLetterQueue(connection: runtime.connection, topology: runtime.topology)
        try await eventually("\(expected) messages in the dead queue") { try await dead.count() == expected }
    }

    @Test func deadMessagesAreListedReplayedAndPurgedWithoutLosingAny() async throws {
        try await TestRuntime.with(consumeReplies: false) { runtime in
            let dead = DeadLetterQueue(connection: runtime.connection, topology: runtime.topology)
            let ready = #"{"conversation_id":"c","session_api_key":"sk-very-secret","url":"http://x"}"#
            try await Self.kill(runtime, id: "poison-1", type: "provision", body: #"{"conversation_id":"c"}"#)
            try await Self.kill(runtime, id: "poison-2", type: "sandbox_ready", body: ready)
            try await Self.deadCount(runtime, is: 2)

            // Listing takes them and puts them back, as the broker recorded them.
            let listed = try await dead.sweep { _ in .keep }.map(\.letter)
            #expect(listed.map(\.id) == ["poison-1", "poison-2"])
            #expect(listed.allSatisfy { $0.queue == runtime.topology.runtimeQueue && $0.reason == "rejected" })
            #expect(listed.allSatisfy { $0.attempts == 5 && $0.diedAt != nil })
            #expect(!listed[1].redactedBody.contains("sk-very-secret"))
            #expect(listed[1].redactedBody.contains("http://x"))
            try await Self.deadCount(runtime, is: 2)

            // A replay goes back to the queue it died in, confirmed before the dead copy goes, with its
            // attempts counted afresh and nothing of its death.
            let replayed = try await dead.sweep { $0.type == "provision" ? .replay : .keep }
            #expect(replayed.filter { $0.decision == .replay }.map(\.done) == [true])
            try await Self.deadCount(runtime, is: 1)
            let consumer = try await runtime.connection.consume(queue: runtime.topology.runtimeQueue, prefetch: 1)
            var iterator = consumer.makeAsyncIterator()
            let again = try #require(try await iterator.next())
            again.ack()
            await consumer.cancel()
            #expect(again.properties.messageID == "poison-1")
            #expect(again.attempt == 1)
            #expect(again.properties.headers["x-replays"]?.intValue == 1)
            #expect(again.properties.headers["x-death"] == nil)

            // A drop removes only what it selects.
            _ = try await dead.sweep { _ in .drop }
            try await Self.deadCount(runtime, is: 0)
            #expect(try await dead.sweep { _ in .drop }.isEmpty)
        }
    }

    @Test func theCommandListsShowsReplaysAndRefusesAPurgeWithoutYes() async throws {
        try await TestRuntime.with(consumeReplies: false) { runtime in
            try await Self.kill(runtime, id: "poison-cli", type: "provision", body: #"{"conversation_id":"c"}"#)
            try await Self.deadCount(runtime, is: 1)
            let namespace = ["--namespace", runtime.namespace]

            let list = try await runtime.deckhand(["dlq", "list"] + namespace)
            #expect(list.status == 0, "\(list.output)")
            #expect(list.output.contains("poison-cli\tprovision\t\(runtime.topology.runtimeQueue)\trejected\t5"))
            let show = try await runtime.deckhand(["dlq", "show", "poison-cli"] + namespace)
            #expect(show.status == 0 && show.output.contains("header x-death"), "\(show.output)")
            let missing = try await runtime.deckhand(["dlq", "show", "no-such-message"] + namespace)
            #expect(missing.status == 1 && missing.output.contains("no dead message no-such-message"))

            let refused = try await runtime.deckhand(["dlq", "purge", "--all"] + namespace)
            #expect(refused.status != 0 && refused.output.contains("--yes"), "\(refused.output)")
            let unselected = try await runtime.deckhand(["dlq", "replay"] + namespace)
            #expect(unselected.status != 0 && unselected.output.contains("--all"), "\(unselected.output)")
            try await Self.deadCount(runtime, is: 1)

            // `--queue` takes the name without the namespace, as an operator types it.
            let replay = try await runtime.deckhand(["dlq", "replay", "--queue", "runtime.commands"] + namespace)
            #expect(replay.status == 0 && replay.output.contains("replayed poison-cli"), "\(replay.output)")
            try await Self.deadCount(runtime, is: 0)
            #expect(try await runtime.connection.inspect(queue: runtime.topology.runtimeQueue).messageCount == 1)
        }
    }
}
