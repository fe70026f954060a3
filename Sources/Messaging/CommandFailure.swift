import AMQP
import DeckhandCore
import Logging

/// A command that can never be handled (a body that does not decode, a request that names nothing): it is
/// dead-lettered at once, since retrying cannot help.
public struct MalformedCommand: Error, CustomStringConvertible {
    public var description: String

    public init(description: String) {
        self.description = description
    }
}

extension AMQPDelivery {
    /// The body decoded as `T`, or a ``MalformedCommand`` naming the type and the problem.
    public func decodeCommand<T: Decodable>(_ type: T.Type) throws -> T {
        do {
            return try message.decode(type)
        } catch {
            throw MalformedCommand(description: "\(T.self): \(error)")
        }
    }
}

extension Logger {
    /// This logger with a delivery's message id, type and attempt in its metadata: the child logger of a
    /// command.
    public func forDelivery(_ delivery: AMQPDelivery) -> Logger {
        var logger = self
        logger[metadataKey: LogKey.amqpMessageID.rawValue] = "\(delivery.properties.messageID ?? "-")"
        logger[metadataKey: LogKey.amqpMessageType.rawValue] = "\(delivery.properties.type ?? "-")"
        logger[metadataKey: LogKey.amqpAttempt.rawValue] = "\(delivery.attempt)"
        if let trace = delivery.traceparent.flatMap(Traceparent.traceID(of:)) {
            logger[metadataKey: LogKey.traceID.rawValue] = "\(trace)"
        }
        return logger
    }
}

extension CommandBus {
    /// Settles a command whose handler threw `error`: a ``MalformedCommand`` is dead-lettered; one
    /// interrupted by a shutdown (its task cancelled) goes back to the queue; anything else goes to the
    /// delayed-retry queues, and is dead-lettered once it has had `maxAttempts` attempts.
    public func settle(
        failed delivery: AMQPDelivery,
        error: any Error,
        from queue: String,
        maxAttempts: Int,
        logger: Logger
    ) async {
        if let malformed = error as? MalformedCommand {
            logger.error("malformed command: dead-lettered", metadata: [LogKey.error.rawValue: "\(malformed)"])
            delivery.reject()
            return
        }
        if Task.isCancelled {
            logger.notice("interrupted by shutdown: requeued")
            delivery.nack(requeue: true)
            return
        }
        logger.warning("command failed", metadata: [LogKey.error.rawValue: "\(error)"])
        do {
            if try await retryLater(delivery, from: queue, maxAttempts: maxAttempts) {
                delivery.ack()
            } else {
                logger.error("command failed on its last attempt: dead-lettered")
                delivery.reject()
            }
        } catch {
            delivery.nack(requeue: true)
        }
    }
}
