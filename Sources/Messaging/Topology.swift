import AMQP
import DeckhandCore

/// The names of Deckhand's exchanges and queues (DESIGN §2), optionally under a namespace prefix so that
/// tests (or two deployments sharing a broker vhost) never meet.
public struct Topology: Sendable, Equatable {
    /// Prepended to every name with a dot; empty in production.
    public let namespace: String

    public init(namespace: String = "") {
        self.namespace = namespace
    }

    private func name(_ base: String) -> String { namespace.isEmpty ? base : "\(namespace).\(base)" }

    /// `name` under this topology's namespace (as it is when it already carries it): what an operator types
    /// (`conversation.commands`) as the broker knows it.
    public func qualified(_ name: String) -> String {
        namespace.isEmpty || name.hasPrefix(namespace + ".") ? name : self.name(name)
    }

    /// Direct exchange of every command; the routing key is the target queue's name.
    public var commandsExchange: String { name("deckhand.commands") }
    /// Topic exchange of every persisted event (`conversation.<id>`) and runtime status (`sandbox.<id>`).
    public var eventsExchange: String { name("deckhand.events") }
    /// Conversation commands and agent steps.
    public var conversationQueue: String { name("conversation.commands") }
    /// Sandbox provisioning and lifecycle commands.
    public var runtimeQueue: String { name("runtime.commands") }
    /// Workspace-file requests (list, read, upload, zip) from gateways to runtime workers: a classic queue
    /// (the requests are transient: direct reply-to, a deadline).
    public var workspaceQueue: String { name("workspace.requests") }
    /// A gateway's own queue of live events (exclusive, auto-deleted), bound per watched conversation.
    public func gatewayQueue(instance: String) -> String { name("gateway.\(instance)") }
    /// Poison messages, for `deckhand dlq`.
    public var deadQueue: String { name("deckhand.dead") }

    /// The delayed-retry queue of `queue` for `delay`: messages wait there, then return to `queue`.
    public func retryQueue(for queue: String, delay: RetryDelay) -> String { "\(queue).retry.\(delay.label)" }

    /// The queue of one node's runtime workers: commands about the sandboxes that node holds (DESIGN §10).
    public func runtimeNodeQueue(_ node: String) -> String { name("runtime.node.\(node)") }

    /// The work queues: quorum queues whose rejected or over-delivered messages go to the dead queue.
    public var workQueues: [String] { [conversationQueue, runtimeQueue] }

    /// Declares everything (idempotent; the connection declares it again after a reconnect).
    public func declare(on connection: AMQPConnection, deliveryLimit: Int = 20) async throws {
        try await connection.declare(AMQPExchange(name: commandsExchange, kind: .direct))
        try await connection.declare(AMQPExchange(name: eventsExchange, kind: .topic))
        _ = try await connection.declare(AMQPQueue(name: deadQueue))
        // A quorum queue, replicated: a classic one lives on one broker node, and while that node is down no
        // process can declare it, so none starts (the cluster drill found it).
        let workspace = AMQPQueue(name: workspaceQueue, messageTTLMilliseconds: 60_000)
        do {
            _ = try await connection.declare(workspace)
        } catch let error as DeckhandError where (error.underlying as? AMQPRefusal)?.replyCode == 406 {
            // Made a classic queue by an earlier Deckhand: replaced (it only ever holds requests that expire
            // within a minute, which their callers retry).
            _ = try await connection.deleteQueue(workspaceQueue)
            _ = try await connection.declare(workspace)
        }
        try await connection.bind(
            AMQPBinding(queue: workspaceQueue, exchange: commandsExchange, routingKey: workspaceQueue)
        )
        for queue in workQueues { try await declareWorkQueue(queue, on: connection, deliveryLimit: deliveryLimit) }
    }

    /// Declares `runtimeNodeQueue(node)`: a quorum queue bound on the commands exchange under its name, whose
    /// rejected, over-delivered and expired messages go to the shared runtime queue. Forwarded commands carry
    /// an expiration (``CommandBus/forward(_:to:expireAfter:)``): those no worker of the node took in time (the
    /// node is down) return to the shared queue, where a surviving worker finds the node's sandboxes given up
    /// on. A failure is retried through the shared queue's retry queues (and forwarded again from there).
    public func declareNodeQueue(_ node: String, on connection: AMQPConnection, deliveryLimit: Int = 20) async throws {
        let queue = runtimeNodeQueue(node)
        _ = try await connection.declare(
            AMQPQueue(
                name: queue,
                deadLetterExchange: "",
                deadLetterRoutingKey: runtimeQueue,
                deliveryLimit: deliveryLimit
            )
        )
        try await connection.bind(AMQPBinding(queue: queue, exchange: commandsExchange, routingKey: queue))
    }

    /// Declares `queue` as a work queue (a quorum queue that dead-letters to the dead queue, with its retry
    /// queues) bound on the commands exchange under its own name (idempotent).
    public func declareWorkQueue(_ queue: String, on connection: AMQPConnection, deliveryLimit: Int = 20) async throws {
        _ = try await connection.declare(
            AMQPQueue(
                name: queue,
                deadLetterExchange: "",
                deadLetterRoutingKey: deadQueue,
                deliveryLimit: deliveryLimit
            )
        )
        try await connection.bind(AMQPBinding(queue: queue, exchange: commandsExchange, routingKey: queue))
        for delay in RetryDelay.allCases {
            _ = try await connection.declare(
                AMQPQueue(
                    name: retryQueue(for: queue, delay: delay),
                    deadLetterExchange: "",
                    deadLetterRoutingKey: queue,
                    messageTTLMilliseconds: delay.milliseconds
                )
            )
        }
    }
}

/// The back-off steps of a handler that failed: the n-th retry waits the n-th delay (the last one repeats).
public enum RetryDelay: Int, Sendable, CaseIterable {
    case oneSecond = 1
    case fiveSeconds = 5
    case thirtySeconds = 30

    public var label: String { "\(rawValue)s" }
    public var milliseconds: Int { rawValue * 1000 }

    /// The delay before retry number `attempt` (1-based).
    public static func forAttempt(_ attempt: Int) -> RetryDelay {
        let all = allCases
        return all[min(max(attempt, 1), all.count) - 1]
    }

    /// How many attempts a command gets so that its retries span at least `span` (1 s, 5 s, then 30 s each):
    /// at least 1.
    public static func attempts(spanning span: Duration) -> Int {
        var attempts = 1
        var waited = Duration.zero
        while waited < span {
            waited += .seconds(forAttempt(attempts).rawValue)
            attempts += 1
        }
        return attempts
    }
}
