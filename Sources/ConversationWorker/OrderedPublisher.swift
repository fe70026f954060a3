import DeckhandCore
import Foundation

/// Publishes a step's events in order, in the background, so that publishing an action overlaps running it;
/// ``finish()`` waits for every publish (and throws the first failure).
final class OrderedPublisher: Sendable {
    private let continuation: AsyncStream<[Event]>.Continuation
    private let task: Task<Void, any Error>

    init(worker: ConversationWorker, conversation: UUID) {
        let (stream, continuation) = AsyncStream<[Event]>.makeStream()
        self.continuation = continuation
        task = Task {
            for await events in stream {
                try await worker.publish(events, conversation: conversation)
            }
        }
    }

    func publish(_ events: [Event]) {
        continuation.yield(events)
    }

    func finish() async throws {
        continuation.finish()
        try await task.value
    }
}
