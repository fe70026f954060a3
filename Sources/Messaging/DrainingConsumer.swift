import AMQP
import DeckhandCore
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// A worker's name in logs, leases and queues: `<host>-<pid>-<8 random hex digits>`, unique across restarts.
public func makeWorkerID() -> String {
    let process = ProcessInfo.processInfo
    return "\(process.hostName)-\(process.processIdentifier)-\(UUID().uuidString.prefix(8).lowercased())"
}

/// The worker loop every consuming role shares: deliveries of one queue handled concurrently (bounded by
/// the prefetch), each within its trace (``Traceparent/current``), until a graceful shutdown or cancellation.
///
/// On a graceful shutdown it takes no new delivery (those that still arrive go back to the queue), lets the
/// handlers in flight finish within `shutdownTimeout`, then cancels the consumer, which ends the loop.
/// Cancelling the consumer first would close its channel and requeue the deliveries in flight. Handlers
/// still running past the timeout are cancelled; their deliveries went back to the queue with the channel.
public struct DrainingConsumer: Sendable {
    /// How long each delivery waited since it was sent (``AMQPMessage/sentAtHeader``; else AMQP's timestamp, in
    /// whole seconds), by queue: the age of the work a pool has not caught up with, which an alert watches.
    public static let waitLabel = "deckhand_queue_wait_seconds"

    static func sentAt(_ delivery: AMQPDelivery) -> Date? {
        if let milliseconds = delivery.properties.headers[AMQPMessage.sentAtHeader]?.intValue {
            return Date(timeIntervalSince1970: Double(milliseconds) / 1000)
        }
        return delivery.properties.timestamp
    }

    public let connection: AMQPConnection
    public let queue: String
    public let prefetch: Int
    public let shutdownTimeout: Duration
    public let logger: Logger

    public init(connection: AMQPConnection, queue: String, prefetch: Int, shutdownTimeout: Duration, logger: Logger) {
        self.connection = connection
        self.queue = queue
        self.prefetch = prefetch
        self.shutdownTimeout = shutdownTimeout
        self.logger = logger
    }

    /// Consumes until shutdown, running `handle` for each delivery (it must ack, nack or reject it) and
    /// `alongside` (a timer loop, say) for as long as the consumer runs.
    public func run(
        alongside: (@Sendable () async -> Void)? = nil,
        handle: @escaping @Sendable (AMQPDelivery) async -> Void
    ) async throws {
        let consumer = try await connection.consume(queue: queue, prefetch: prefetch)
        let waited = Timer(label: Self.waitLabel, dimensions: [("queue", queue)])
        let state = LoopState()
        let logger = self.logger
        let shutdownTimeout = self.shutdownTimeout
        try await withThrowingDiscardingTaskGroup { group in
            if let alongside { group.addTask { await alongside() } }
            group.addTask {
                let graceful = (try? await gracefulShutdown()) != nil
                state.draining.withLock { $0 = true }
                if graceful {
                    logger.info("draining", metadata: [LogKey.inFlight.rawValue: "\(state.inFlight.withLock { $0 })"])
                    let deadline = ContinuousClock.now + shutdownTimeout
                    while state.inFlight.withLock({ $0 }) > 0, ContinuousClock.now < deadline, !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                }
                await consumer.cancel()
            }
            for try await delivery in consumer {
                // A delivery that arrives while draining is left unsettled: the broker takes it back when the
                // consumer's channel closes. Nacking it would have it redelivered to this consumer at once, again
                // and again, until the queue's delivery limit dead-letters it.
                if state.draining.withLock({ $0 }) { continue }
                if let sent = Self.sentAt(delivery) { waited.recordSeconds(max(0, Date().timeIntervalSince(sent))) }
                state.inFlight.withLock { $0 += 1 }
                group.addTask {
                    // The handler's work, and every command it sends, belongs to the delivery's trace.
                    await Traceparent.$current.withValue(delivery.traceparent) { await handle(delivery) }
                    state.inFlight.withLock { $0 -= 1 }
                }
            }
            group.cancelAll()
        }
    }
}

/// What the loop's tasks share: handlers in flight, and whether it is draining.
private final class LoopState: Sendable {
    let inFlight = Mutex(0)
    let draining = Mutex(false)
}
