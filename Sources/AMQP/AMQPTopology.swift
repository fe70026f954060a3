/// An exchange to declare.
public struct AMQPExchange: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case direct, topic, fanout, headers
    }

    public var name: String
    public var kind: Kind
    public var durable: Bool
    public var autoDelete: Bool
    public var arguments: AMQPTable

    public init(name: String, kind: Kind, durable: Bool = true, autoDelete: Bool = false, arguments: AMQPTable = [:]) {
        self.name = name
        self.kind = kind
        self.durable = durable
        self.autoDelete = autoDelete
        self.arguments = arguments
    }
}

/// A queue to declare.
public struct AMQPQueue: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case classic, quorum
    }

    public var name: String
    public var kind: Kind
    public var durable: Bool
    public var exclusive: Bool
    public var autoDelete: Bool
    /// Where rejected, expired or over-delivered messages go (`x-dead-letter-exchange`).
    public var deadLetterExchange: String?
    /// The routing key dead-lettered messages get (`x-dead-letter-routing-key`); the original one when nil.
    public var deadLetterRoutingKey: String?
    /// A quorum queue dead-letters a message after this many deliveries (`x-delivery-limit`).
    public var deliveryLimit: Int?
    /// Messages older than this many milliseconds expire (`x-message-ttl`).
    public var messageTTLMilliseconds: Int?
    /// Further arguments, added after the ones above.
    public var arguments: AMQPTable

    public init(
        name: String,
        kind: Kind = .quorum,
        durable: Bool = true,
        exclusive: Bool = false,
        autoDelete: Bool = false,
        deadLetterExchange: String? = nil,
        deadLetterRoutingKey: String? = nil,
        deliveryLimit: Int? = nil,
        messageTTLMilliseconds: Int? = nil,
        arguments: AMQPTable = [:]
    ) {
        self.name = name
        self.kind = kind
        self.durable = durable
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.deadLetterExchange = deadLetterExchange
        self.deadLetterRoutingKey = deadLetterRoutingKey
        self.deliveryLimit = deliveryLimit
        self.messageTTLMilliseconds = messageTTLMilliseconds
        self.arguments = arguments
    }

    /// An exclusive, auto-deleted classic queue: gone when its connection closes (re-declared on reconnect).
    public static func exclusive(_ name: String) -> AMQPQueue {
        AMQPQueue(name: name, kind: .classic, durable: false, exclusive: true, autoDelete: true)
    }

    /// The declaration's full argument table.
    public var declarationArguments: AMQPTable {
        var table = arguments
        if kind == .quorum { table["x-queue-type"] = "quorum" }
        if let deadLetterExchange { table["x-dead-letter-exchange"] = .string(deadLetterExchange) }
        if let deadLetterRoutingKey { table["x-dead-letter-routing-key"] = .string(deadLetterRoutingKey) }
        if let deliveryLimit { table["x-delivery-limit"] = .int(Int64(deliveryLimit)) }
        if let messageTTLMilliseconds { table["x-message-ttl"] = .int(Int64(messageTTLMilliseconds)) }
        return table
    }
}

/// A binding of a queue to an exchange.
public struct AMQPBinding: Sendable, Equatable, Hashable {
    public var queue: String
    public var exchange: String
    public var routingKey: String

    public init(queue: String, exchange: String, routingKey: String) {
        self.queue = queue
        self.exchange = exchange
        self.routingKey = routingKey
    }
}

/// What a connection has declared, kept so that a reconnect declares it again before consumers resume.
struct TopologyRecord: Sendable {
    private(set) var exchanges: [AMQPExchange] = []
    private(set) var queues: [AMQPQueue] = []
    private(set) var bindings: [AMQPBinding] = []

    mutating func add(_ exchange: AMQPExchange) {
        exchanges.removeAll { $0.name == exchange.name }
        exchanges.append(exchange)
    }

    mutating func add(_ queue: AMQPQueue) {
        queues.removeAll { $0.name == queue.name }
        queues.append(queue)
    }

    mutating func add(_ binding: AMQPBinding) {
        if !bindings.contains(binding) { bindings.append(binding) }
    }

    mutating func remove(_ binding: AMQPBinding) {
        bindings.removeAll { $0 == binding }
    }

    mutating func removeQueue(named name: String) {
        queues.removeAll { $0.name == name }
        bindings.removeAll { $0.queue == name }
    }

    mutating func removeExchange(named name: String) {
        exchanges.removeAll { $0.name == name }
        bindings.removeAll { $0.exchange == name }
    }
}
