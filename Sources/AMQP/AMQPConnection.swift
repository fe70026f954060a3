import DeckhandCore
import DeckhandPOSIX
import Foundation
import Logging
import Synchronization

extension DeckhandError.Code {
    /// The broker refused an operation and closed the channel (the message names the AMQP reply code and text).
    public static let amqpRefused: Self = "AMQP$REFUSED"
    /// The broker answered a publish with `basic.nack`.
    public static let amqpNacked: Self = "AMQP$NACKED"
    /// A mandatory message matched no queue.
    public static let amqpUnroutable: Self = "AMQP$UNROUTABLE"
    /// The connection was closed by its owner.
    public static let amqpClosed: Self = "AMQP$CLOSED"
    /// The broker blocks publishing on this connection (a resource alarm: memory or disk).
    public static let amqpBlocked: Self = "AMQP$BLOCKED"
}

/// The broker's own reason for refusing an operation (the `underlying` error of an `AMQP$REFUSED`).
public struct AMQPRefusal: Error, Sendable, Equatable {
    /// The AMQP reply code: 404 NOT_FOUND, 405 RESOURCE_LOCKED, 406 PRECONDITION_FAILED, …
    public var replyCode: UInt16
    public var replyText: String

    /// An exclusive queue held by another connection — possibly this client's previous one, which the broker
    /// has not yet seen go — or declared again with a different exclusivity.
    public static let resourceLocked: UInt16 = 405
}

extension AMQPRefusal: RedactedStringConvertible {
    /// The broker's code and text (names of queues and exchanges, never a message body).
    public var redactedDescription: String { "AMQP \(replyCode) \(replyText)" }
}

/// A connection to RabbitMQ that reconnects by itself and loses nothing it confirmed.
///
/// One OS thread owns the librabbitmq connection and never lets it leave (CLIBS.md): it polls the socket and
/// a wake-up pipe, services heartbeats, sends what callers queued and hands deliveries out. Nothing here
/// blocks Swift's cooperative pool. After a lost connection it reconnects with back-off, declares again what
/// was declared, resumes consumers and publishes again what was not yet confirmed, so delivery is
/// at-least-once: consumers must be idempotent (by `message_id`).
///
/// Use separate connections for publishing and for consuming, so a flow-controlled publisher never delays
/// acks. Call ``close()`` when done: it drains what is in flight in the order of CLIBS.md pitfall 5.
public final class AMQPConnection: Sendable {
    /// How to connect and how patient to be.
    public struct Configuration: Sendable {
        public var url: AMQPURL
        /// Shown in the broker's connection list.
        public var name: String
        public var heartbeat: Duration
        public var connectTimeout: Duration
        /// How long a publish (or a topology operation) may wait, across reconnects, before it fails.
        public var publishTimeout: Duration
        /// The most published messages awaiting a confirm at once.
        public var confirmWindow: Int
        public var reconnectMin: Duration
        public var reconnectMax: Duration

        public init(url: AMQPURL, name: String = "deckhand", settings: AMQPSettings = AMQPSettings()) {
            self.url = url
            self.name = name
            self.heartbeat = settings.heartbeat
            self.connectTimeout = settings.connectTimeout
            self.publishTimeout = settings.publishTimeout
            self.confirmWindow = settings.confirmWindow
            self.reconnectMin = settings.reconnectMin
            self.reconnectMax = settings.reconnectMax
        }

        /// The configuration for `settings.url`.
        public init(settings: AMQPSettings, name: String) {
            self.init(url: settings.url, name: name, settings: settings)
        }
    }

    /// What the connection looks like from outside, for health checks and tests.
    public struct Status: Sendable {
        public var connected: Bool
        /// The broker's version, from its connection properties.
        public var serverVersion: String?
        /// How many times the connection was established (1 after the first connect).
        public var connections: Int
        /// The reason the connection was last lost, if it was.
        public var lastError: String?
        /// The broker blocks publishing on the connection (`connection.blocked`: a memory or disk alarm) until
        /// it says `connection.unblocked`; publishes wait meanwhile.
        public var blocked = false
        /// Publishes that failed because their deadline (`amqp.publish_timeout`) passed, since the start.
        public var expiredPublishes = 0
    }

    let shared: ConnectionShared

    private init(shared: ConnectionShared) {
        self.shared = shared
    }

    deinit {
        shared.submit(.close(nil))
    }

    /// Connects, failing with a clear error when the first attempt fails; later losses are repaired by
    /// reconnecting.
    public static func connect(
        configuration: Configuration,
        logger: Logger = Logger(label: "deckhand.amqp")
    ) async throws -> AMQPConnection {
        var logger = logger
        logger[metadataKey: LogKey.amqpConnection.rawValue] = .string(configuration.name)
        let shared = try ConnectionShared(configuration: configuration, logger: logger)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let thread = Thread {
                ConnectionCore(shared: shared, firstConnect: continuation).run()
            }
            thread.name = "amqp:\(configuration.name)"
            thread.start()
        }
        return AMQPConnection(shared: shared)
    }

    /// The connection's current status.
    public var status: Status { shared.status.withLock { $0 } }

    // MARK: Topology

    /// Declares an exchange (again after every reconnect).
    public func declare(_ exchange: AMQPExchange) async throws {
        _ = try await topology(.declareExchange(exchange))
    }

    /// Declares a queue (again after every reconnect); returns its message count.
    @discardableResult
    public func declare(_ queue: AMQPQueue) async throws -> Int {
        try await topology(.declareQueue(queue)).messageCount
    }

    /// Binds a queue to an exchange (again after every reconnect).
    public func bind(_ binding: AMQPBinding) async throws {
        _ = try await topology(.bind(binding))
    }

    /// Removes a binding.
    public func unbind(_ binding: AMQPBinding) async throws {
        _ = try await topology(.unbind(binding))
    }

    /// The number of ready messages and consumers of an existing queue (a passive declare).
    public func inspect(queue name: String) async throws -> (messageCount: Int, consumerCount: Int) {
        let result = try await topology(.inspectQueue(name))
        return (result.messageCount, result.consumerCount)
    }

    /// Deletes a queue; returns how many messages it held.
    @discardableResult
    public func deleteQueue(_ name: String) async throws -> Int {
        try await topology(.deleteQueue(name)).messageCount
    }

    /// Deletes an exchange.
    public func deleteExchange(_ name: String) async throws {
        _ = try await topology(.deleteExchange(name))
    }

    /// Removes every ready message of a queue; returns how many.
    @discardableResult
    public func purge(queue name: String) async throws -> Int {
        try await topology(.purgeQueue(name)).messageCount
    }

    private func topology(_ operation: TopologyOperation) async throws -> TopologyResult {
        let deadline = ContinuousClock.now + shared.configuration.publishTimeout
        return try await withCheckedThrowingContinuation { continuation in
            shared.submit(.topology(operation, deadline: deadline, continuation))
        }
    }

    // MARK: Publishing

    /// Publishes a message and returns once the broker confirmed it.
    ///
    /// During an outage the message waits (up to the configured publish timeout) and is published after the
    /// reconnect; a message that was published but not yet confirmed when the connection broke is published
    /// again, so it may arrive twice. A `basic.nack`, or a `basic.return` of an unroutable `mandatory` message,
    /// is an error. Cancelling the task gives up waiting (the message may still arrive).
    public func publish(
        _ message: AMQPMessage,
        exchange: String,
        routingKey: String,
        mandatory: Bool = false
    ) async throws {
        let id = shared.nextID()
        let deadline = ContinuousClock.now + shared.configuration.publishTimeout
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let publish = PendingPublish(
                    id: id,
                    message: message,
                    exchange: exchange,
                    routingKey: routingKey,
                    mandatory: mandatory,
                    deadline: deadline,
                    completion: .publish(continuation)
                )
                shared.submit(.publish(publish))
            }
        } onCancel: {
            shared.submit(.abandon(id: id))
        }
    }

    /// Sends a request over RabbitMQ's direct reply-to and waits for the reply, at most `timeout`.
    ///
    /// The message gets `reply_to` and a fresh `correlation_id`; it is published `mandatory`, so a request
    /// nobody can receive fails at once. A connection lost before the reply arrives fails the request (the
    /// responder may or may not have acted on it).
    public func request(
        _ message: AMQPMessage,
        exchange: String,
        routingKey: String,
        timeout: Duration
    ) async throws -> AMQPDelivery {
        let id = shared.nextID()
        var message = message
        message.properties.replyTo = directReplyTo
        message.properties.correlationID = UUID().uuidString
        let deadline = ContinuousClock.now + timeout
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<AMQPDelivery, any Error>) in
                let publish = PendingPublish(
                    id: id,
                    message: message,
                    exchange: exchange,
                    routingKey: routingKey,
                    mandatory: true,
                    deadline: deadline,
                    completion: .request(continuation, timeout: timeout)
                )
                shared.submit(.publish(publish))
            }
        } onCancel: {
            shared.submit(.abandon(id: id))
        }
    }

    /// Answers a request received by a consumer: publishes `message` to its `reply_to` with its
    /// `correlation_id`.
    public func reply(to request: AMQPDelivery, with message: AMQPMessage) async throws {
        guard let replyTo = request.properties.replyTo else {
            throw DeckhandError(.protocolViolation, "the request has no reply_to")
        }
        var message = message
        message.properties.correlationID = request.properties.correlationID
        message.properties.persistent = false
        try await publish(message, exchange: "", routingKey: replyTo)
    }

    // MARK: Consuming

    /// Starts consuming a queue with at most `prefetch` unacknowledged deliveries.
    ///
    /// The consumer survives reconnects (deliveries that were not acked before the loss come again, marked
    /// redelivered). End it with ``AMQPConsumer/cancel()``.
    public func consume(queue: String, prefetch: Int, exclusive: Bool = false) async throws -> AMQPConsumer {
        let id = shared.nextConsumerID()
        let (stream, streamContinuation) = AsyncThrowingStream.makeStream(of: AMQPDelivery.self)
        let state = ConsumerState()
        let registration = ConsumerRegistration(
            id: id,
            queue: queue,
            prefetch: prefetch,
            exclusive: exclusive,
            tag: "\(shared.configuration.name).\(id).\(UUID().uuidString.prefix(8))",
            state: state,
            continuation: streamContinuation
        )
        let consumer = AMQPConsumer(connection: self, id: id, stream: stream, state: state)
        streamContinuation.onTermination = { [shared] _ in
            shared.submit(.cancelConsumer(id: id, nil))
        }
        let deadline = ContinuousClock.now + shared.configuration.publishTimeout
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            shared.submit(.consume(registration, deadline: deadline, continuation))
        }
        return consumer
    }

    func cancelConsumer(id: Int) async {
        await withCheckedContinuation { continuation in
            shared.submit(.cancelConsumer(id: id, continuation))
        }
    }

    // MARK: Closing

    /// Closes gracefully: consumers stop taking deliveries, queued acks are flushed, each consumer is
    /// cancelled (waiting for `cancel-ok`), in-flight publishes get until their deadline to be confirmed,
    /// then the channels and the connection close.
    public func close() async {
        await withCheckedContinuation { continuation in
            shared.submit(.close(continuation))
        }
    }
}

let directReplyTo = "amq.rabbitmq.reply-to"

/// What the caller's side and the connection thread share: the inbox, the wake-up pipe and the status.
final class ConnectionShared: Sendable {
    let configuration: AMQPConnection.Configuration
    let logger: Logger
    let status: Mutex<AMQPConnection.Status>
    private let inbox = Mutex(Inbox())
    private let ids = Atomic<UInt64>(0)
    private let consumerIDs = Atomic<Int>(0)
    let wakePipe: WakePipe

    struct Inbox: ~Copyable {
        var commands: [Command] = []
        var signalled = false
        var closed = false
    }

    init(configuration: AMQPConnection.Configuration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.status = Mutex(AMQPConnection.Status(connected: false, serverVersion: nil, connections: 0, lastError: nil))
        wakePipe = try WakePipe()
    }

    func nextID() -> UInt64 { ids.wrappingAdd(1, ordering: .relaxed).newValue }
    func nextConsumerID() -> Int { consumerIDs.wrappingAdd(1, ordering: .relaxed).newValue }

    /// Queues a command for the connection thread and wakes it if it sleeps.
    func submit(_ command: Command) {
        let rejected: Command? = inbox.withLock { inbox in
            if inbox.closed { return command }
            inbox.commands.append(command)
            if inbox.signalled { return nil }
            inbox.signalled = true
            wakePipe.wake()
            return nil
        }
        if let rejected { rejected.fail(DeckhandError(.amqpClosed, "the AMQP connection is closed")) }
    }

    /// Takes every queued command (thread side); with `closing`, later submissions are refused.
    func takeCommands(closing: Bool = false) -> [Command] {
        inbox.withLock { inbox in
            inbox.signalled = false
            if closing { inbox.closed = true }
            let commands = inbox.commands
            inbox.commands.removeAll(keepingCapacity: true)
            return commands
        }
    }
}

/// Work for the connection thread.
enum Command: Sendable {
    case topology(TopologyOperation, deadline: ContinuousClock.Instant, CheckedContinuation<TopologyResult, any Error>)
    case publish(PendingPublish)
    case abandon(id: UInt64)
    case consume(ConsumerRegistration, deadline: ContinuousClock.Instant, CheckedContinuation<Void, any Error>)
    case settle(consumerID: Int, generation: UInt64, tag: UInt64, kind: SettlementKind)
    case cancelConsumer(id: Int, CheckedContinuation<Void, Never>?)
    case close(CheckedContinuation<Void, Never>?)

    /// Fails a command that can no longer run.
    func fail(_ error: any Error) {
        switch self {
        case .topology(_, _, let continuation): continuation.resume(throwing: error)
        case .publish(let publish): publish.completion.fail(error)
        case .consume(let registration, _, let continuation):
            registration.continuation.finish(throwing: error)
            continuation.resume(throwing: error)
        case .cancelConsumer(_, let continuation): continuation?.resume()
        case .close(let continuation): continuation?.resume()
        case .abandon, .settle: break
        }
    }
}

enum TopologyOperation: Sendable {
    case declareExchange(AMQPExchange)
    case declareQueue(AMQPQueue)
    case inspectQueue(String)
    case bind(AMQPBinding)
    case unbind(AMQPBinding)
    case deleteQueue(String)
    case deleteExchange(String)
    case purgeQueue(String)
}

struct TopologyResult: Sendable {
    var messageCount = 0
    var consumerCount = 0
}

struct PendingPublish: Sendable {
    enum Completion: Sendable {
        case publish(CheckedContinuation<Void, any Error>)
        case request(CheckedContinuation<AMQPDelivery, any Error>, timeout: Duration)

        func fail(_ error: any Error) {
            switch self {
            case .publish(let continuation): continuation.resume(throwing: error)
            case .request(let continuation, _): continuation.resume(throwing: error)
            }
        }
    }

    let id: UInt64
    let message: AMQPMessage
    let exchange: String
    let routingKey: String
    let mandatory: Bool
    let deadline: ContinuousClock.Instant
    let completion: Completion
}

struct ConsumerRegistration: Sendable {
    let id: Int
    let queue: String
    let prefetch: Int
    let exclusive: Bool
    let tag: String
    let state: ConsumerState
    let continuation: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation
}
