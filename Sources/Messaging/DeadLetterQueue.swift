import AMQP
import DeckhandCore
import Foundation

/// A message in the dead queue (`deckhand.dead`), with what the broker wrote when it died.
public struct DeadLetter: Sendable {
    public var message: AMQPMessage
    /// The queue it died in (`x-first-death-queue`), where a replay sends it; nil when the broker did not say.
    public var queue: String?
    /// Why it died: `rejected` (a handler gave up on it: malformed, or failed on its last attempt),
    /// `delivery_limit` (delivered too often: a worker died holding it each time) or `expired`.
    public var reason: String?
    /// When it first died (the broker's `x-death` time, seconds).
    public var diedAt: Date?
    /// The attempts its handlers had (`x-attempt`).
    public var attempts: Int

    public var id: String { message.properties.messageID ?? "-" }
    public var type: String { message.properties.type ?? "-" }

    public init(_ message: AMQPMessage) {
        self.message = message
        let headers = message.properties.headers
        // x-death lists the deaths newest first: the last one is the first death.
        var first: [String: AMQPFieldValue]?
        if case .array(let deaths)? = headers["x-death"], case .table(let entry)? = deaths.last { first = entry }
        queue = headers["x-first-death-queue"]?.stringValue ?? first?["queue"]?.stringValue
        reason = headers["x-first-death-reason"]?.stringValue ?? first?["reason"]?.stringValue
        if case .timestamp(let time)? = first?["time"] { diedAt = time }
        attempts = message.properties.attempt
    }

    /// The body to show: JSON with the values of secret-named fields (`*key*`, `*secret*`, `*token*`,
    /// `*password*`, such as a `sandbox_ready`'s `session_api_key`) replaced by `<redacted>`; a body that is
    /// not JSON as text.
    public var redactedBody: String {
        guard let json = try? JSONValue(parsing: message.body) else {
            return String(decoding: message.body, as: UTF8.self)
        }
        return Self.redact(json).serialized
    }

    static func redact(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let fields):
            return .object(
                fields.reduce(into: [:]) { result, field in
                    let name = field.key.lowercased()
                    let secret = ["key", "secret", "token", "password"].contains { name.contains($0) }
                    result[field.key] = secret && field.value != .null ? "<redacted>" : redact(field.value)
                }
            )
        case .array(let items):
            return .array(items.map(redact))
        default:
            return value
        }
    }

    /// The message as a replay publishes it: sent again as attempt 1, and how often it was replayed
    /// (`x-replays`) counted.
    var replayed: AMQPMessage {
        var message = message.again(attempt: 1)
        let replays = message.properties.headers["x-replays"]?.intValue ?? 0
        message.properties.headers["x-replays"] = .int(replays + 1)
        return message
    }
}

/// Which dead letters a command acts on: those with one of `ids` (when given), from `queue` and of `type`
/// (when given). The empty filter matches every one.
public struct DeadLetterFilter: Sendable, Equatable {
    public var ids: Set<String>
    public var queue: String?
    public var type: String?

    public init(ids: Set<String> = [], queue: String? = nil, type: String? = nil) {
        self.ids = ids
        self.queue = queue
        self.type = type
    }

    public func matches(_ letter: DeadLetter) -> Bool {
        (ids.isEmpty || ids.contains(letter.id)) && (queue.map { $0 == letter.queue } ?? true)
            && (type.map { $0 == letter.type } ?? true)
    }
}

/// The dead queue, read and changed without losing a message: `deckhand dlq`.
///
/// AMQP cannot read a queue without taking its messages, so a sweep takes them all (an exclusive consumer:
/// one sweep at a time), lets the caller decide for each, and settles: a replay is published to the queue
/// the message died in and confirmed by the broker before the dead copy is acked; a drop is acked; every
/// other message goes back when the consumer ends (the broker requeues what was not acked). Workers may run
/// meanwhile: none of them consumes the dead queue.
public struct DeadLetterQueue: Sendable {
    public enum Decision: Sendable, Equatable {
        case keep, replay, drop
    }

    /// What a sweep did with one message: `done` is false for a replay that could not be made (no queue
    /// named, or the broker refused it): the message stays dead.
    public struct Outcome: Sendable {
        public var letter: DeadLetter
        public var decision: Decision
        public var done: Bool
        public var problem: String?
    }

    let connection: AMQPConnection
    let topology: Topology

    public init(connection: AMQPConnection, topology: Topology) {
        self.connection = connection
        self.topology = topology
    }

    /// How many messages the dead queue holds.
    public func count() async throws -> Int {
        try await connection.inspect(queue: topology.deadQueue).messageCount
    }

    /// Takes up to `limit` messages of the dead queue (those there when it starts; it stops waiting for more
    /// after `wait`), settles each as `decide` says, and returns what it did, in queue order.
    public func sweep(
        limit: Int = 10_000,
        wait: Duration = .seconds(10),
        _ decide: (DeadLetter) -> Decision
    ) async throws -> [Outcome] {
        let expected = min(try await count(), limit)
        guard expected > 0 else { return [] }
        let consumer: AMQPConsumer
        do {
            consumer = try await connection.consume(queue: topology.deadQueue, prefetch: expected, exclusive: true)
        } catch {
            throw DeckhandError(
                .unavailable,
                "cannot take \(topology.deadQueue) (another `deckhand dlq` may be running): \(error)",
                underlying: error
            )
        }
        var outcomes: [Outcome] = []
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Messages taken by something else meanwhile never come: stop waiting for them.
                group.addTask {
                    try await Task.sleep(for: wait)
                    await consumer.cancel()
                }
                for try await delivery in consumer {
                    outcomes.append(try await settle(delivery, decide))
                    if outcomes.count == expected { break }
                }
                group.cancelAll()
            }
        } catch {
            await consumer.cancel()
            throw error
        }
        // What was kept goes back to the queue.
        await consumer.cancel()
        return outcomes
    }

    private func settle(_ delivery: AMQPDelivery, _ decide: (DeadLetter) -> Decision) async throws -> Outcome {
        let letter = DeadLetter(delivery.message)
        var outcome = Outcome(letter: letter, decision: decide(letter), done: true)
        switch outcome.decision {
        case .keep:
            break
        case .drop:
            delivery.ack()
        case .replay:
            guard let queue = letter.queue else {
                outcome.done = false
                outcome.problem = "the broker did not say which queue it died in"
                return outcome
            }
            do {
                try await connection.publish(letter.replayed, exchange: "", routingKey: queue, mandatory: true)
                delivery.ack()
            } catch let error as DeckhandError where error.code == .amqpUnroutable {
                outcome.done = false
                outcome.problem = "queue \(queue) does not exist"
            }
        }
        return outcome
    }
}
