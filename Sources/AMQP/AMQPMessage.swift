import Foundation

/// The AMQP basic properties Deckhand uses, plus the headers table.
public struct AMQPProperties: Sendable, Equatable {
    public var contentType: String?
    public var messageID: String?
    public var correlationID: String?
    /// The message's kind, for Deckhand the command or event name.
    public var type: String?
    /// Seconds precision, as AMQP carries it.
    public var timestamp: Date?
    public var replyTo: String?
    /// `true` sets delivery mode 2: the broker writes the message to disk.
    public var persistent: Bool
    /// Per-message TTL in milliseconds, as a string (AMQP's `expiration`).
    public var expiration: String?
    public var headers: AMQPTable

    public init(
        contentType: String? = nil,
        messageID: String? = nil,
        correlationID: String? = nil,
        type: String? = nil,
        timestamp: Date? = nil,
        replyTo: String? = nil,
        persistent: Bool = true,
        expiration: String? = nil,
        headers: AMQPTable = [:]
    ) {
        self.contentType = contentType
        self.messageID = messageID
        self.correlationID = correlationID
        self.type = type
        self.timestamp = timestamp
        self.replyTo = replyTo
        self.persistent = persistent
        self.expiration = expiration
        self.headers = headers
    }
}

/// A message to publish: a body and its properties.
public struct AMQPMessage: Sendable, Equatable {
    public var body: [UInt8]
    public var properties: AMQPProperties

    public init(body: [UInt8], properties: AMQPProperties = AMQPProperties()) {
        self.body = body
        self.properties = properties
    }

    /// A persistent JSON message with a fresh UUID message id and the current time, as DESIGN §2 asks of
    /// every Deckhand message.
    public init(
        json body: [UInt8],
        type: String? = nil,
        messageID: String = UUID().uuidString,
        headers: AMQPTable = [:]
    ) {
        self.body = body
        self.properties = AMQPProperties(
            contentType: "application/json",
            messageID: messageID,
            type: type,
            timestamp: Date(),
            persistent: true,
            headers: headers
        )
    }

    /// A JSON message encoding `value`.
    public init<T: Encodable>(
        encoding value: T,
        type: String? = nil,
        messageID: String = UUID().uuidString,
        headers: AMQPTable = [:]
    )
        throws
    {
        let data = try JSONEncoder().encode(value)
        self.init(json: [UInt8](data), type: type, messageID: messageID, headers: headers)
    }

    /// Decodes the body as JSON.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(type, from: Data(body))
    }
}

/// A message handed to a consumer, which must settle it with ``ack()``, ``nack(requeue:)`` or ``reject(requeue:)``.
public struct AMQPDelivery: Sendable {
    public var message: AMQPMessage
    public var exchange: String
    public var routingKey: String
    /// `true` when the broker delivered this message before (to this or another consumer).
    public var redelivered: Bool
    public var deliveryTag: UInt64
    let settlement: Settlement?

    struct Settlement: Sendable {
        let connection: ConnectionShared
        let consumerID: Int
        let generation: UInt64
    }

    public var body: [UInt8] { message.body }
    public var properties: AMQPProperties { message.properties }

    /// How many times a quorum queue delivered this message before (`x-delivery-count`), 0 for the first.
    public var deliveryCount: Int {
        Int(message.properties.headers["x-delivery-count"]?.intValue ?? 0)
    }

    /// Acknowledges the message: the broker forgets it. Never blocks; acks are coalesced and sent by the
    /// connection's thread. An ack for a delivery of a connection that has since been replaced is dropped (the
    /// broker redelivers the message).
    public func ack() { settle(.ack) }

    /// Negatively acknowledges: with `requeue` the broker delivers it again (a quorum queue counts it against
    /// `x-delivery-limit`), without it the message is dead-lettered or dropped.
    public func nack(requeue: Bool = true) { settle(.nack(requeue: requeue)) }

    /// Rejects the message; like ``nack(requeue:)`` for a single message.
    public func reject(requeue: Bool = false) { settle(.reject(requeue: requeue)) }

    private func settle(_ kind: SettlementKind) {
        guard let settlement else { return }
        settlement.connection.submit(
            .settle(consumerID: settlement.consumerID, generation: settlement.generation, tag: deliveryTag, kind: kind)
        )
    }
}

enum SettlementKind: Sendable, Equatable {
    case ack
    case nack(requeue: Bool)
    case reject(requeue: Bool)
}
