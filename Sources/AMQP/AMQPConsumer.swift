import Synchronization

/// The deliveries of one consumer, in order. Settle each with `ack`, `nack` or `reject`.
///
/// Iteration ends after ``cancel()`` (deliveries still buffered are not handed out: the broker requeues
/// them), or throws when the broker cancels the consumer (its queue was deleted, for example).
public struct AMQPConsumer: AsyncSequence, Sendable {
    public typealias Element = AMQPDelivery

    let connection: AMQPConnection
    let id: Int
    let stream: AsyncThrowingStream<AMQPDelivery, any Error>
    let state: ConsumerState

    /// Stops the consumer gracefully: acks queued so far are sent, `basic.cancel` is confirmed by the
    /// broker, then the consumer's channel closes (the broker requeues whatever was not acked).
    public func cancel() async {
        state.stopped.store(true, ordering: .releasing)
        await connection.cancelConsumer(id: id)
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(base: stream.makeAsyncIterator(), state: state)
    }

    public struct Iterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<AMQPDelivery, any Error>.AsyncIterator
        let state: ConsumerState

        public mutating func next() async throws -> AMQPDelivery? {
            guard let delivery = try await base.next() else { return nil }
            if state.stopped.load(ordering: .acquiring) { return nil }
            return delivery
        }
    }
}

/// Shared between a consumer's iterator and the connection thread: set when the consumer stops, so
/// buffered deliveries are no longer handed out.
final class ConsumerState: Sendable {
    let stopped = Atomic<Bool>(false)
}
