import AMQP
import DeckhandCore
import DeckhandTesting
import Foundation
import Messaging
import Testing

@Suite struct AMQPBehaviourTests {
    @Test func aMessageThatAlwaysFailsIsDeadLetteredAfterTheDeliveryLimit() async throws {
        let name = TestEnvironment.uniqueName("dlq")
        let connection = try await TestAMQP.connect(name: name)
        try await connection.declare(
            AMQPExchange(name: name + ".dead", kind: .fanout, durable: false, autoDelete: true)
        )
        try await connection.declare(AMQPQueue(name: name + ".dead", kind: .quorum))
        try await connection.bind(AMQPBinding(queue: name + ".dead", exchange: name + ".dead", routingKey: ""))
        try await connection.declare(
            AMQPQueue(name: name, kind: .quorum, deadLetterExchange: name + ".dead", deliveryLimit: 3)
        )
        let message = AMQPMessage(json: Array("{}".utf8), type: "poison")
        try await connection.publish(message, exchange: "", routingKey: name)

        var deliveries = 0
        let consumer = try await connection.consume(queue: name, prefetch: 1)
        let dead = try await connection.consume(queue: name + ".dead", prefetch: 1)
        let failing = Task {
            var count = 0
            for try await delivery in consumer {
                count += 1
                delivery.nack(requeue: true)
            }
            return count
        }
        var deadIterator = dead.makeAsyncIterator()
        let deadLettered = try #require(try await deadIterator.next())
        deadLettered.ack()
        await consumer.cancel()
        deliveries = try await failing.value

        #expect(deadLettered.properties.messageID == message.properties.messageID)
        #expect(deliveries == 4, "delivered once and redelivered up to the limit of 3")
        guard case .array(let deaths)? = deadLettered.properties.headers["x-death"],
            case .table(let death)? = deaths.first
        else {
            Issue.record("no x-death header: \(deadLettered.properties.headers)")
            return
        }
        #expect(death["reason"]?.stringValue == "delivery_limit")
        #expect(death["queue"]?.stringValue == name)
        await dead.cancel()
        try await connection.deleteQueue(name)
        try await connection.deleteQueue(name + ".dead")
        await connection.close()
    }

    @Test func requestReplyIsAnsweredOrTimesOut() async throws {
        let name = TestEnvironment.uniqueName("rpc")
        let server = try await TestAMQP.connect(name: name + "-server")
        let client = try await TestAMQP.connect(name: name + "-client")
        try await server.declare(AMQPQueue.exclusive(name))
        let requests = try await server.consume(queue: name, prefetch: 8)
        let serving = Task {
            for try await request in requests {
                let text = String(decoding: request.body, as: UTF8.self)
                try await server.reply(to: request, with: AMQPMessage(json: Array(text.uppercased().utf8)))
                request.ack()
            }
        }

        let replies = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<20 {
                group.addTask {
                    let reply = try await client.request(
                        AMQPMessage(json: Array("\"hello \(index)\"".utf8)),
                        exchange: "",
                        routingKey: name,
                        timeout: .seconds(5)
                    )
                    return String(decoding: reply.body, as: UTF8.self)
                }
            }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(replies == Set((0..<20).map { "\"HELLO \($0)\"" }))

        // A queue nobody answers from: the request times out at its deadline.
        let silent = name + ".silent"
        try await server.declare(AMQPQueue.exclusive(silent))
        let started = ContinuousClock.now
        let timedOut = await #expect(throws: DeckhandError.self) {
            _ = try await client.request(
                AMQPMessage(json: []),
                exchange: "",
                routingKey: silent,
                timeout: .milliseconds(300)
            )
        }
        #expect(timedOut?.code == .timeout)
        #expect(ContinuousClock.now - started < .seconds(3))

        // A request nobody can receive fails at once (mandatory publish, returned by the broker).
        let unroutable = await #expect(throws: DeckhandError.self) {
            _ = try await client.request(
                AMQPMessage(json: []),
                exchange: "",
                routingKey: name + ".nobody",
                timeout: .seconds(5)
            )
        }
        #expect(unroutable?.code == .amqpUnroutable)

        await requests.cancel()
        serving.cancel()
        await client.close()
        await server.close()
    }

    @Test func refusedOperationsFailClearlyAndTheConnectionStaysUsable() async throws {
        let name = TestEnvironment.uniqueName("refused")
        let connection = try await TestAMQP.connect(name: name)
        try await connection.declare(AMQPQueue.exclusive(name))

        let unroutable = await #expect(throws: DeckhandError.self) {
            try await connection.publish(
                AMQPMessage(json: []),
                exchange: "",
                routingKey: name + ".none",
                mandatory: true
            )
        }
        #expect(unroutable?.code == .amqpUnroutable)
        #expect(unroutable?.message.contains("NO_ROUTE") == true)

        let missingExchange = await #expect(throws: DeckhandError.self) {
            try await connection.publish(AMQPMessage(json: []), exchange: name + ".missing", routingKey: "x")
        }
        #expect(missingExchange?.code == .amqpRefused)
        #expect(missingExchange?.message.contains("404") == true)

        let inequivalent = await #expect(throws: DeckhandError.self) {
            try await connection.declare(AMQPQueue(name: name, kind: .classic, durable: true))
        }
        #expect(inequivalent?.code == .amqpRefused)

        let missingQueue = await #expect(throws: DeckhandError.self) {
            _ = try await connection.inspect(queue: name + ".missing")
        }
        #expect(missingQueue?.code == .amqpRefused)

        // After all of that, the same connection still publishes and declares.
        try await connection.publish(AMQPMessage(json: Array("1".utf8)), exchange: "", routingKey: name)
        #expect(try await connection.inspect(queue: name).messageCount == 1)
        #expect(connection.status.connections == 1)
        await connection.close()
    }

    /// A publish the broker refuses (`basic.nack`: here a full queue with `x-overflow: reject-publish`) fails with
    /// AMQP$NACKED, and the connection starts over, so the next publish goes out on a new channel (a channel a
    /// stopped cluster node left with a stale view of a quorum queue would refuse it too).
    @Test func aRefusedPublishFailsAndTheNextGoesOutOnANewChannel() async throws {
        let name = TestEnvironment.uniqueName("nacked")
        let connection = try await TestAMQP.connect(name: name)
        let full: AMQPTable = ["x-max-length": .int(1), "x-overflow": "reject-publish"]
        try await connection.declare(
            AMQPQueue(name: name, kind: .classic, durable: false, exclusive: true, autoDelete: true, arguments: full)
        )
        try await connection.publish(AMQPMessage(json: Array("1".utf8)), exchange: "", routingKey: name)
        let refused = await #expect(throws: DeckhandError.self) {
            try await connection.publish(AMQPMessage(json: Array("2".utf8)), exchange: "", routingKey: name)
        }
        #expect(refused?.code == .amqpNacked)
        try await eventually("the connection started over") { connection.status.connections == 2 }
        #expect(connection.status.lastError?.contains("basic.nack") == true, "\(connection.status.lastError ?? "")")
        // The queue was exclusive to the old connection: declared again, empty, it takes the next publish.
        try await connection.publish(AMQPMessage(json: Array("3".utf8)), exchange: "", routingKey: name)
        #expect(try await connection.inspect(queue: name).messageCount == 1)
        await connection.close()
    }

    @Test func anExclusiveQueueOfAnotherConnectionIsLocked() async throws {
        let name = TestEnvironment.uniqueName("locked")
        let owner = try await TestAMQP.connect(name: name + "-owner")
        let other = try await TestAMQP.connect(name: name + "-other")
        try await owner.declare(AMQPQueue.exclusive(name))
        let locked = await #expect(throws: DeckhandError.self) { try await other.declare(AMQPQueue.exclusive(name)) }
        #expect(locked?.code == .amqpRefused)
        #expect((locked?.underlying as? AMQPRefusal)?.replyCode == AMQPRefusal.resourceLocked)
        #expect(locked?.message.contains("405 RESOURCE_LOCKED") == true)
        await other.close()
        await owner.close()
    }

    @Test func cancellingAConsumerFlushesAcksAndRequeuesTheRest() async throws {
        let name = TestEnvironment.uniqueName("cancel")
        let connection = try await TestAMQP.connect(name: name)
        try await connection.declare(AMQPQueue(name: name, kind: .quorum))
        for index in 0..<100 {
            try await connection.publish(AMQPMessage(json: Array("\(index)".utf8)), exchange: "", routingKey: name)
        }
        let consumer = try await connection.consume(queue: name, prefetch: 10)
        var acked = 0
        for try await delivery in consumer {
            delivery.ack()
            acked += 1
            if acked == 5 { break }
        }
        await consumer.cancel()
        // Five acked and gone; the other 95 (five of them delivered but never acked) come back to the queue
        // (a quorum queue returns them asynchronously after the channel closed: poll briefly).
        var ready = 0
        for _ in 0..<100 {
            ready = try await connection.inspect(queue: name).messageCount
            if ready >= 95 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(ready == 95)
        try await connection.deleteQueue(name)
        await connection.close()
    }

    @Test func aPublishDuringAnOutageWaitsForTheReconnectOrFailsAtItsDeadline() async throws {
        let name = TestEnvironment.uniqueName("outage")
        let url = try TestAMQP.url
        let proxy = try TCPProxy.start(targetHost: url.host, targetPort: url.port)
        defer { proxy.stop() }
        let connection = try await TestAMQP.connect(name: name) { configuration in
            configuration.url.port = proxy.port
            // Long enough for the broker to let go of the old connection's exclusive queue on a loaded machine.
            configuration.publishTimeout = .seconds(3)
            configuration.heartbeat = .seconds(2)
        }
        try await connection.declare(AMQPQueue.exclusive(name))

        proxy.sever()
        // The connection notices the cut (EOF on its socket) and keeps trying to reconnect.
        let cut = ContinuousClock.now
        while connection.status.connected, ContinuousClock.now - cut < .seconds(5) {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(!connection.status.connected, "the cut was noticed within 5 s")
        let started = ContinuousClock.now
        let failure = await #expect(throws: DeckhandError.self) {
            try await connection.publish(AMQPMessage(json: Array("lost".utf8)), exchange: "", routingKey: name)
        }
        #expect(failure?.code == .unavailable)
        #expect(failure?.message.contains("unavailable") == true)
        #expect(ContinuousClock.now - started < .seconds(6))

        // The outage ends while a publish is waiting: it goes out after the reconnect, and the exclusive queue
        // (gone with the old connection) was declared again.
        let waiting = Task {
            try await connection.publish(
                AMQPMessage(json: Array("kept".utf8)),
                exchange: "",
                routingKey: name,
                mandatory: true
            )
        }
        try await Task.sleep(for: .milliseconds(300))
        proxy.restore()
        try await waiting.value
        #expect(connection.status.connected)
        #expect(connection.status.connections >= 2)
        #expect(try await connection.inspect(queue: name).messageCount == 1)
        await connection.close()
    }

    /// A URL naming several brokers (a cluster): the connection takes the first that answers, and when that one
    /// is lost it moves to another, its consumer resumed and its publishes delivered.
    @Test func aURLOfSeveralBrokersMovesToAnotherWhenOneIsLost() async throws {
        let name = TestEnvironment.uniqueName("brokers")
        let url = try TestAMQP.url
        let (first, second) = (
            try TCPProxy.start(targetHost: url.host, targetPort: url.port),
            try TCPProxy.start(targetHost: url.host, targetPort: url.port)
        )
        defer {
            first.stop()
            second.stop()
        }
        // Nothing listens on port 1: the first address is refused, the second answers.
        let addresses = [1, first.port, second.port].map { AMQPURL.Endpoint(host: "127.0.0.1", port: $0) }
        let connection = try await TestAMQP.connect(name: name) { configuration in
            configuration.url.endpoints = addresses
            configuration.heartbeat = .seconds(2)
            configuration.reconnectMin = .milliseconds(50)
        }
        try await connection.declare(AMQPQueue(name: name))
        let consumer = try await connection.consume(queue: name, prefetch: 10)
        var deliveries = consumer.makeAsyncIterator()
        try await connection.publish(AMQPMessage(json: Array("before".utf8)), exchange: "", routingKey: name)
        let before = try #require(try await deliveries.next())
        #expect(before.body == Array("before".utf8))
        before.ack()

        first.stop()
        try await eventually("reconnected through the other broker") {
            connection.status.connected && connection.status.connections >= 2
        }
        try await connection.publish(AMQPMessage(json: Array("after".utf8)), exchange: "", routingKey: name)
        // "before" may come again first: its ack may not have reached the broker before the cut.
        var seen: [String] = []
        while seen.last != "after", let delivery = try await deliveries.next() {
            seen.append(String(decoding: delivery.body, as: UTF8.self))
            delivery.ack()
        }
        #expect(seen.last == "after", "the consumer resumed on the other broker: \(seen)")
        #expect(seen.dropLast().allSatisfy { $0 == "before" }, "\(seen)")
        await consumer.cancel()
        _ = try await connection.deleteQueue(name)
        await connection.close()
    }

    /// The workspace-requests queue is a quorum queue (replicated: a classic one lives on one broker node, and
    /// while that node is down no process can declare it, so none starts); a classic one made by an earlier
    /// Deckhand is replaced.
    @Test func theWorkspaceQueueIsAQuorumQueueAndAnOlderClassicOneIsReplaced() async throws {
        let name = TestEnvironment.uniqueName("wsq")
        let topology = Topology(namespace: name)
        let connection = try await TestAMQP.connect(name: name)
        _ = try await connection.declare(
            AMQPQueue(name: topology.workspaceQueue, kind: .classic, messageTTLMilliseconds: 60_000)
        )
        try await topology.declare(on: connection)
        let classic = await #expect(throws: DeckhandError.self, "it is a quorum queue now") {
            _ = try await connection.declare(
                AMQPQueue(name: topology.workspaceQueue, kind: .classic, messageTTLMilliseconds: 60_000)
            )
        }
        #expect((classic?.underlying as? AMQPRefusal)?.replyCode == 406)
        try await topology.declare(on: connection)
        for queue in [topology.workspaceQueue, topology.deadQueue] + topology.workQueues {
            _ = try? await connection.deleteQueue(queue)
        }
        for queue in topology.workQueues {
            for delay in RetryDelay.allCases {
                _ = try? await connection.deleteQueue(topology.retryQueue(for: queue, delay: delay))
            }
        }
        try? await connection.deleteExchange(topology.commandsExchange)
        try? await connection.deleteExchange(topology.eventsExchange)
        await connection.close()
    }

    @Test func theFirstConnectFailsWithTheEndpointNamed() async throws {
        var configuration = AMQPConnection.Configuration(url: AMQPURL(host: "127.0.0.1", port: 1), name: "nowhere")
        configuration.connectTimeout = .seconds(2)
        let error = await #expect(throws: DeckhandError.self) {
            _ = try await AMQPConnection.connect(configuration: configuration)
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("127.0.0.1:1") == true)
    }

    @Test func aWrongPasswordIsRefusedWithoutShowingIt() async throws {
        var configuration = AMQPConnection.Configuration(url: try TestAMQP.url, name: "badpass")
        configuration.url.password = "not-the-password-x9"
        let error = await #expect(throws: DeckhandError.self) {
            _ = try await AMQPConnection.connect(configuration: configuration)
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("not-the-password-x9") == false)
    }
}
