import AMQP
import DeckhandCore
import Foundation
import Logging
import Messaging
import Synchronization

/// The live feed of one gateway: its exclusive queue `gateway.<instance>` on the events exchange, bound to
/// `conversation.<id>` while at least one of its clients watches that conversation, and unbound when the
/// last one leaves. Each client gets a bounded buffer; one that falls behind it is cut off (``Subscription``).
final class EventHub: Sendable {
    /// What a subscription receives.
    enum Signal: Sendable {
        /// A live event: its id and its JSON.
        case event(Int, String)
        /// The broker connection was re-established: events may have been missed, read PostgreSQL again.
        case resync
        /// Nothing happened for a while (SSE sends a keep-alive comment).
        case tick
    }

    let connection: AMQPConnection
    let exchange: String
    let queue: String
    let bufferSize: Int
    let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var entries: [UUID: Entry] = [:]
        /// Unbinds still in flight, which a new first subscriber waits for before it binds again; each removes
        /// itself when done (keyed by its subscriber id, so a later unbind is not removed by an earlier one).
        var unbinding: [UUID: (id: Int, task: Task<Void, Never>)] = [:]
        var nextID = 0
    }

    private struct Entry {
        var subscribers: [Int: Subscriber] = [:]
        var bound: Task<Void, any Error>
    }

    private struct Subscriber {
        var continuation: AsyncStream<Signal>.Continuation
        var overflowed: Subscription.Flag
    }

    init(connection: AMQPConnection, topology: Topology, instance: String, bufferSize: Int, logger: Logger) {
        self.connection = connection
        self.exchange = topology.eventsExchange
        self.queue = topology.gatewayQueue(instance: instance)
        self.bufferSize = bufferSize
        self.logger = logger
    }

    /// Declares the queue (exclusive to this connection, gone with it; declared again after a reconnect).
    func declare() async throws {
        _ = try await connection.declare(
            AMQPQueue(name: queue, kind: .classic, durable: false, exclusive: true, autoDelete: true)
        )
    }

    /// Consumes the queue and hands each event to the subscribers of its conversation, until cancelled; tells
    /// every subscriber to read PostgreSQL again after a reconnect, and ticks every `tick`.
    func run(tick: Duration = .seconds(15)) async throws {
        let consumer = try await connection.consume(queue: queue, prefetch: 1000, exclusive: true)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                var connections = connection.status.connections
                var lastTick = ContinuousClock.now
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(250))
                    let now = connection.status.connections
                    if now != connections {
                        connections = now
                        broadcast(.resync)
                    }
                    if ContinuousClock.now - lastTick >= tick {
                        lastTick = .now
                        broadcast(.tick)
                    }
                }
            }
            group.addTask { [self] in
                for try await delivery in consumer {
                    dispatch(delivery)
                    delivery.ack()
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
        await consumer.cancel()
    }

    private func dispatch(_ delivery: AMQPDelivery) {
        guard let (conversation, id) = ConversationEvents.identify(delivery) else { return }
        send(.event(id, String(decoding: delivery.body, as: UTF8.self)), to: conversation)
    }

    private func broadcast(_ signal: Signal) {
        for conversation in state.withLock({ Array($0.entries.keys) }) { send(signal, to: conversation) }
    }

    private func send(_ signal: Signal, to conversation: UUID) {
        let targets = state.withLock { state in state.entries[conversation].map { Array($0.subscribers) } ?? [] }
        for (id, target) in targets {
            if case .dropped = target.continuation.yield(signal) {
                // Cut off: released here at once (its stream may be stuck writing to a client that reads nothing).
                target.overflowed.set()
                unsubscribe(conversation, id: id)
            }
        }
    }

    /// Subscribes to a conversation's live events; returns once the binding is in place, so that every event
    /// published from then on reaches the subscription.
    func subscribe(_ conversation: UUID) async throws -> Subscription {
        let (stream, continuation) = AsyncStream<Signal>.makeStream(bufferingPolicy: .bufferingOldest(bufferSize))
        let flag = Subscription.Flag()
        let (id, bound) = state.withLock { state -> (Int, Task<Void, any Error>) in
            state.nextID += 1
            let id = state.nextID
            if state.entries[conversation] == nil {
                let pending = state.unbinding[conversation]?.task
                let binding = AMQPBinding(
                    queue: queue,
                    exchange: exchange,
                    routingKey: ConversationEvents.routingKey(conversation)
                )
                let connection = connection
                state.entries[conversation] = Entry(
                    bound: Task {
                        await pending?.value
                        try await connection.bind(binding)
                    }
                )
            }
            state.entries[conversation]?.subscribers[id] = Subscriber(continuation: continuation, overflowed: flag)
            return (id, state.entries[conversation]!.bound)
        }
        let subscription = Subscription(
            hub: self,
            conversation: conversation,
            id: id,
            signals: stream,
            overflowed: flag
        )
        do {
            try await bound.value
        } catch {
            subscription.close()
            throw error
        }
        return subscription
    }

    /// Removes a subscriber; the last one of a conversation unbinds it.
    fileprivate func unsubscribe(_ conversation: UUID, id: Int) {
        let continuation = state.withLock { state -> AsyncStream<Signal>.Continuation? in
            guard var entry = state.entries[conversation],
                let continuation = entry.subscribers.removeValue(forKey: id)?.continuation
            else { return nil }
            if entry.subscribers.isEmpty {
                state.entries[conversation] = nil
                let bound = entry.bound
                let binding = AMQPBinding(
                    queue: queue,
                    exchange: exchange,
                    routingKey: ConversationEvents.routingKey(conversation)
                )
                state.unbinding[conversation] = (
                    id,
                    Task {
                        if (try? await bound.value) != nil {
                            do {
                                try await self.connection.unbind(binding)
                            } catch {
                                self.logger.warning(
                                    "cannot unbind a conversation",
                                    metadata: [LogKey.error.rawValue: "\(error)"]
                                )
                            }
                        }
                        self.state.withLock { state in
                            if state.unbinding[conversation]?.id == id { state.unbinding[conversation] = nil }
                        }
                    }
                )
            } else {
                state.entries[conversation] = entry
            }
            return continuation
        }
        continuation?.finish()
    }

    /// Ends every subscription (the gateway is shutting down: its streams end and their clients reconnect
    /// elsewhere).
    func finishAll() {
        let all = state.withLock { state in state.entries.values.flatMap { $0.subscribers.values } }
        for subscriber in all { subscriber.continuation.finish() }
    }

    /// Clients of a conversation on this gateway.
    func subscribers(of conversation: UUID) -> Int {
        state.withLock { $0.entries[conversation]?.subscribers.count ?? 0 }
    }

    /// Clients per conversation on this gateway (conversations with none are left out).
    func counts() -> [UUID: Int] {
        state.withLock { state in
            state.entries.compactMapValues { $0.subscribers.isEmpty ? nil : $0.subscribers.count }
        }
    }
}

/// One client's view of a conversation's live events. Close it when the client leaves.
final class Subscription: Sendable {
    /// Set when the client fell more than the buffer behind and was cut off; runs what waits for that.
    final class Flag: Sendable {
        private let state = Mutex<(isSet: Bool, actions: [@Sendable () -> Void])>((false, []))

        func set() {
            let actions = state.withLock { state in
                defer { state = (true, []) }
                return state.isSet ? [] : state.actions
            }
            for action in actions { action() }
        }

        var isSet: Bool { state.withLock { $0.isSet } }

        /// Runs `action` when the flag is set (at once if it is).
        func whenSet(_ action: @escaping @Sendable () -> Void) {
            let now = state.withLock { state in
                if !state.isSet { state.actions.append(action) }
                return state.isSet
            }
            if now { action() }
        }
    }

    let conversation: UUID
    let signals: AsyncStream<EventHub.Signal>
    let overflowed: Flag
    private let hub: EventHub
    private let id: Int
    private let closed = Atomic(false)

    fileprivate init(
        hub: EventHub,
        conversation: UUID,
        id: Int,
        signals: AsyncStream<EventHub.Signal>,
        overflowed: Flag
    ) {
        self.hub = hub
        self.conversation = conversation
        self.id = id
        self.signals = signals
        self.overflowed = overflowed
    }

    func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        hub.unsubscribe(conversation, id: id)
    }

    deinit { close() }
}
