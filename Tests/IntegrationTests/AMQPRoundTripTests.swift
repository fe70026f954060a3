import AMQP
import DeckhandCore
import DeckhandTesting
import Foundation
import Testing

@Suite struct AMQPRoundTripTests {
    @Test func publishConfirmConsumeAckKeepsPropertiesAndHeaders() async throws {
        let name = TestEnvironment.uniqueName("roundtrip")
        let publisher = try await TestAMQP.connect(name: name + "-pub")
        let consumerConnection = try await TestAMQP.connect(name: name + "-con")
        try await publisher.declare(AMQPExchange(name: name, kind: .direct, durable: false, autoDelete: true))
        try await publisher.declare(AMQPQueue(name: name, kind: .quorum))
        try await publisher.bind(AMQPBinding(queue: name, exchange: name, routingKey: "key"))

        var message = AMQPMessage(
            json: Array(#"{"hello":"world"}"#.utf8),
            type: "greeting",
            headers: [
                "x-attempt": 2, "traceparent": "00-abc-def-01", "x-flag": true,
            ]
        )
        message.properties.correlationID = "corr-1"
        message.properties.replyTo = "somewhere"
        try await publisher.publish(message, exchange: name, routingKey: "key")

        let consumer = try await consumerConnection.consume(queue: name, prefetch: 10)
        var iterator = consumer.makeAsyncIterator()
        let delivery = try #require(try await iterator.next())
        delivery.ack()
        #expect(delivery.body == message.body)
        #expect(delivery.routingKey == "key")
        #expect(delivery.exchange == name)
        #expect(!delivery.redelivered)
        let properties = delivery.properties
        #expect(properties.contentType == "application/json")
        #expect(properties.messageID == message.properties.messageID)
        #expect(properties.correlationID == "corr-1")
        #expect(properties.type == "greeting")
        #expect(properties.replyTo == "somewhere")
        #expect(properties.persistent)
        #expect(properties.timestamp.map { abs($0.timeIntervalSinceNow) < 60 } == true)
        #expect(properties.headers["x-attempt"] == .int(2))
        #expect(properties.headers["traceparent"] == .string("00-abc-def-01"))
        #expect(properties.headers["x-flag"] == .bool(true))

        await consumer.cancel()
        // The ack was flushed before the cancel: nothing is left in the queue.
        #expect(try await publisher.inspect(queue: name).messageCount == 0)
        try await publisher.deleteQueue(name)
        await consumerConnection.close()
        await publisher.close()
    }
}
