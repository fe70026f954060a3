import AMQP
import DeckhandCore
import Foundation
import Logging

/// Sends Deckhand's commands and events with the properties DESIGN §2 asks of every message, and hands a
/// failed command to the delayed-retry queues.
///
/// Two connections: RabbitMQ blocks a connection that publishes while a resource alarm (memory, disk)
/// lasts — it stops reading its socket, so acks and deliveries on it would stall too. Consumers and their
/// acks use ``consuming``, which never publishes; publishes (commands, events, replies, retries) use
/// ``connection``. An alarm then holds back only what is published.
public struct CommandBus: Sendable {
    /// Publishes: commands, events, replies, retries.
    public let connection: AMQPConnection
    /// Consumes, acks and looks at queues; never publishes. The same as ``connection`` when one was given.
    public let consuming: AMQPConnection
    public let topology: Topology

    public init(connection: AMQPConnection, consuming: AMQPConnection? = nil, topology: Topology) {
        self.connection = connection
        self.consuming = consuming ?? connection
        self.topology = topology
    }

    /// Publishes command `type` with `payload` to `queue` through the commands exchange and returns once the
    /// broker confirmed it. Published `mandatory`: a queue that does not exist is an error, not a silent drop.
    /// Its `traceparent` continues the trace of the work in progress (``Traceparent/current``), or starts one.
    public func send<Payload: Encodable>(
        _ type: String,
        _ payload: Payload,
        to queue: String,
        messageID: String = UUID().uuidString,
        userID: String? = nil,
        traceparent: String? = nil
    ) async throws {
        let trace = traceparent ?? Traceparent.current.map(Traceparent.child(of:)) ?? Traceparent.make()
        var headers: AMQPTable = [
            "x-attempt": 1, "traceparent": .string(trace),
            // When it was sent, in milliseconds (AMQP's timestamp has whole seconds): the wait consumers measure.
            AMQPMessage.sentAtHeader: .int(Int64((Date().timeIntervalSince1970 * 1000).rounded())),
        ]
        if let userID { headers["x-user-id"] = .string(userID) }
        let message = try AMQPMessage(encoding: payload, type: type, messageID: messageID, headers: headers)
        try await connection.publish(message, exchange: topology.commandsExchange, routingKey: queue, mandatory: true)
    }

    /// Publishes an event on the events exchange under `routingKey` (`conversation.<id>`, `sandbox.<id>`).
    /// Nobody need be listening.
    public func publishEvent<Payload: Encodable>(
        _ type: String,
        _ payload: Payload,
        routingKey: String,
        messageID: String = UUID().uuidString
    ) async throws {
        let message = try AMQPMessage(encoding: payload, type: type, messageID: messageID)
        try await connection.publish(message, exchange: topology.eventsExchange, routingKey: routingKey)
    }

    /// Publishes an event whose JSON body is already serialized.
    public func publishEvent(_ type: String, body: [UInt8], routingKey: String, messageID: String) async throws {
        let message = AMQPMessage(json: body, type: type, messageID: messageID)
        try await connection.publish(message, exchange: topology.eventsExchange, routingKey: routingKey)
    }

    /// Sends `delivery` on to `queue` (bound on the commands exchange under its name) as it is — same message id,
    /// type, body, trace and attempt — to expire there after `expireAfter` if no one takes it. The caller then
    /// acks the original; the message is not handled here.
    public func forward(_ delivery: AMQPDelivery, to queue: String, expireAfter: Duration) async throws {
        var message = delivery.message.again(attempt: delivery.attempt)
        message.properties.expiration = String(max(1, expireAfter.wholeMilliseconds))
        try await connection.publish(message, exchange: topology.commandsExchange, routingKey: queue, mandatory: true)
    }

    /// After a handler failed on `delivery` (taken from `queue`): publishes a copy to the retry queue for its
    /// next attempt and returns `true` (the caller then acks the original), or returns `false` when the
    /// message has had `maxAttempts` attempts (the caller rejects it: the queue dead-letters it).
    public func retryLater(_ delivery: AMQPDelivery, from queue: String, maxAttempts: Int) async throws -> Bool {
        let attempt = delivery.attempt
        guard attempt < maxAttempts else { return false }
        let message = delivery.message.again(attempt: attempt + 1)
        let retryQueue = topology.retryQueue(for: queue, delay: .forAttempt(attempt))
        try await connection.publish(message, exchange: "", routingKey: retryQueue, mandatory: true)
        return true
    }
}

extension AMQPProperties {
    /// The attempt of the message (`x-attempt`, from 1), counting retries through the retry queues.
    public var attempt: Int { max(1, Int(headers["x-attempt"]?.intValue ?? 1)) }
}

extension AMQPMessage {
    /// This message to publish once more, as attempt `attempt` (a retry, a replay of a dead one): what the
    /// broker added when it delivered or dead-lettered it removed, and no per-message TTL.
    func again(attempt: Int) -> AMQPMessage {
        var message = self
        for key in Self.brokerHeaders { message.properties.headers[key] = nil }
        message.properties.headers["x-attempt"] = .int(Int64(attempt))
        message.properties.expiration = nil
        return message
    }

    /// The header of a command's sending time (Unix milliseconds); kept on retries and forwards, so a wait
    /// measured from it counts the whole time the work has been waiting.
    public static let sentAtHeader = "x-sent-at-ms"

    static let brokerHeaders = [
        "x-death", "x-first-death-queue", "x-first-death-reason", "x-first-death-exchange", "x-last-death-queue",
        "x-last-death-reason", "x-last-death-exchange", "x-delivery-count",
    ]
}

extension AMQPDelivery {
    /// The attempt this delivery is (`x-attempt`, from 1), counting retries through the retry queues.
    public var attempt: Int { properties.attempt }

    /// The W3C trace context this message carries, if any.
    public var traceparent: String? { properties.headers["traceparent"]?.stringValue }
}
