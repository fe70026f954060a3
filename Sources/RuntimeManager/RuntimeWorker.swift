import AMQP
import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import Logging
import Messaging
import RuntimeBackends
import ServiceLifecycle

/// A runtime-manager worker (`deckhand runtime-worker`): consumes `runtime.commands`, provisions sandboxes
/// through its backends, keeps the warm pool and the idle timers, and reconciles the backends with the
/// `sandboxes` table when it starts. Stateless: any number can run, on any node.
///
/// Every command is idempotent by message id (`processed_messages`) and by state: a provision for a
/// conversation that has a live sandbox answers with that sandbox; one whose sandbox another worker is
/// starting waits for it, or takes it over when that worker's lease ran out.
public final class RuntimeWorker: Service, Sendable {
    public struct Configuration: Sendable {
        public var settings: RuntimeSettings
        /// The backend of a `provision` that names none.
        public var defaultBackend: RuntimeSettings.Backend
        /// Commands handled at once (the consumer's prefetch).
        public var prefetch: Int
        /// This worker's name in leases and logs.
        public var workerID: String
        /// Attempts through the retry queues before a failing command is dead-lettered: by default as many as
        /// span `runtime.command_retry_for`.
        public var maxAttempts: Int
        /// The address this node's sandboxes are published on (`node.advertise_host`), recorded with its lease.
        public var advertiseHost: String = "127.0.0.1"

        public init(
            settings: RuntimeSettings,
            defaultBackend: RuntimeSettings.Backend,
            prefetch: Int = 32,
            workerID: String = makeWorkerID(),
            maxAttempts: Int? = nil
        ) {
            self.settings = settings
            self.defaultBackend = defaultBackend
            self.prefetch = prefetch
            self.workerID = workerID
            self.maxAttempts = maxAttempts ?? RetryDelay.attempts(spanning: settings.commandRetryFor)
        }
    }

    public let configuration: Configuration
    let bus: CommandBus
    let store: SandboxStore
    let backends: [RuntimeSettings.Backend: any SandboxBackend]
    let http: HTTPClient
    let logger: Logger

    static let consumerName = "runtime-worker"

    public init(
        configuration: Configuration,
        bus: CommandBus,
        store: SandboxStore,
        backends: [any SandboxBackend],
        http: HTTPClient,
        logger: Logger = Logger(label: "deckhand.runtime")
    ) {
        self.configuration = configuration
        self.bus = bus
        self.store = store
        self.backends = Dictionary(backends.map { ($0.kind, $0) }, uniquingKeysWith: { first, _ in first })
        self.http = http
        var logger = logger
        logger[metadataKey: LogKey.worker.rawValue] = "\(configuration.workerID)"
        logger[metadataKey: LogKey.node.rawValue] = "\(store.node)"
        self.logger = logger
    }

    var settings: RuntimeSettings { configuration.settings }
    var topology: Topology { bus.topology }

    // MARK: Running

    /// Answers workspace-file requests (a consumer of `workspace.requests` beside the commands) until shutdown.
    func answerWorkspaceRequests() async {
        let responder = WorkspaceResponder(bus: bus, store: store, http: http, logger: logger)
        do {
            try await DrainingConsumer(
                connection: bus.consuming,
                queue: topology.workspaceQueue,
                prefetch: 16,
                shutdownTimeout: settings.shutdownTimeout,
                logger: logger
            ).run(handle: { await responder.handle($0) })
        } catch {
            if !Task.isCancelled {
                logger.error("workspace requests stopped", metadata: [LogKey.error.rawValue: "\(error)"])
            }
        }
    }

    /// Reconciles, then consumes until a graceful shutdown (or cancellation): on shutdown it stops taking
    /// commands, lets the ones in flight finish within `runtime.shutdown_timeout` (cancelling, and so
    /// requeueing, what is left), and returns.
    public func run() async throws {
        try await topology.declareNodeQueue(store.node, on: bus.connection)
        _ = try await store.renewNode(lease: settings.nodeLease, advertiseHost: configuration.advertiseHost)
        try await reconcile()
        logger.info(
            "runtime worker consuming",
            metadata: [
                LogKey.amqpQueue.rawValue: "\(topology.runtimeQueue),\(nodeQueue)",
                LogKey.backends.rawValue: "\(backends.keys.map(\.rawValue).sorted().joined(separator: ","))",
            ]
        )
        try await consumer(of: topology.runtimeQueue).run(
            alongside: {
                async let maintenance: Void = self.maintenanceLoop()
                async let workspace: Void = self.answerWorkspaceRequests()
                async let node: Void = self.consumeNodeQueue()
                async let lease: Void = self.nodeLeaseLoop()
                _ = await (maintenance, workspace, node, lease)
            },
            handle: { await self.handle($0) }
        )
        logger.info("runtime worker stopped")
    }

    /// This node's queue: commands about its sandboxes that a worker of another node took and sent on.
    var nodeQueue: String { topology.runtimeNodeQueue(store.node) }

    private func consumer(of queue: String) -> DrainingConsumer {
        DrainingConsumer(
            connection: bus.consuming,
            queue: queue,
            prefetch: configuration.prefetch,
            shutdownTimeout: settings.shutdownTimeout,
            logger: logger
        )
    }

    private func consumeNodeQueue() async {
        do {
            try await consumer(of: nodeQueue).run(handle: { await self.handle($0) })
        } catch {
            if !Task.isCancelled {
                logger.error("the node's queue stopped", metadata: [LogKey.error.rawValue: "\(error)"])
            }
        }
    }

    // MARK: Commands

    /// Handles a command taken from the shared queue or this node's; a failure is retried through the shared
    /// queue's retry queues either way (from there it is sent on to the node again if it is the node's).
    func handle(_ delivery: AMQPDelivery) async {
        let logger = self.logger.forDelivery(delivery)
        guard let command = delivery.properties.type.flatMap(RuntimeCommand.init(rawValue:)) else {
            logger.error("unknown runtime command: dead-lettered")
            delivery.reject()
            return
        }
        let messageID = delivery.properties.messageID
        do {
            if let messageID, try await store.isProcessed(consumer: Self.consumerName, messageID: messageID) {
                logger.debug("already handled")
                delivery.ack()
                return
            }
            switch command {
            case .provision:
                let request = try delivery.decodeCommand(ProvisionRequest.self)
                do {
                    try await provision(request, logger: logger)
                } catch let error as DeckhandError where error.code == .unavailable {
                    // The engine did not answer: retried like any outage, and on the last attempt the
                    // conversation is told rather than left waiting.
                    guard delivery.attempt >= configuration.maxAttempts else { throw error }
                    logger.error(
                        "the sandbox backend stayed unavailable through every attempt",
                        metadata: [LogKey.error.rawValue: "\(error)"]
                    )
                    try await sendFailed(
                        conversation: request.conversationID,
                        sandbox: nil,
                        backend: request.backend ?? configuration.defaultBackend,
                        code: error.code,
                        reason: error.message
                    )
                }
            case .pause, .resume, .stop, .destroy:
                try await lifecycle(command, delivery.decodeCommand(SandboxTarget.self), logger: logger)
            case .poolRefill:
                try await refill()
            }
            if let messageID { try await store.markProcessed(consumer: Self.consumerName, messageID: messageID) }
            delivery.ack()
        } catch let elsewhere as HeldElsewhere {
            // Not handled here, so not recorded as processed: the node that holds the sandbox handles it.
            do {
                try await bus.forward(
                    delivery,
                    to: topology.runtimeNodeQueue(elsewhere.node),
                    expireAfter: try await forwardExpiry(node: elsewhere.node)
                )
                logger.notice(
                    "sent on to node \(elsewhere.node), which holds the sandbox",
                    metadata: [LogKey.sandboxID.rawValue: "\(elsewhere.sandbox)"]
                )
                delivery.ack()
            } catch {
                await bus.settle(
                    failed: delivery,
                    error: error,
                    from: topology.runtimeQueue,
                    maxAttempts: configuration.maxAttempts,
                    logger: logger
                )
            }
        } catch {
            await bus.settle(
                failed: delivery,
                error: error,
                from: topology.runtimeQueue,
                maxAttempts: configuration.maxAttempts,
                logger: logger
            )
        }
    }

    /// How long a command sent on to `node` waits in its queue before it comes back to the shared one: the rest
    /// of the node's lease and one sweep round (a survivor's renewal interval). A node that is alive takes it long
    /// before; for a dead one it comes back about when the sweep has given the node's sandboxes up, not a whole
    /// lease after that (with the full lease, a conversation of a dead node waited up to two leases).
    func forwardExpiry(node: String) async throws -> Duration {
        guard let remaining = try await store.leaseRemaining(node: node) else { return settings.nodeLease }
        return min(settings.nodeLease, max(.seconds(1), remaining + settings.nodeLease / 3))
    }

    // MARK: Messages out

    func sendReady(_ record: SandboxRecord, fromWarmPool: Bool = false) async throws {
        guard let conversation = record.conversationID, let url = record.url, let key = record.sessionAPIKey else {
            throw DeckhandError(.internalError, "sandbox \(record.id) is not ready to be handed out")
        }
        RuntimeMetrics.provision(record.backend, fromWarmPool ? .warm : .ready)
        let ready = SandboxReady(
            conversationID: conversation,
            sandboxID: record.id,
            url: url,
            sessionAPIKey: key,
            backend: record.backend,
            image: record.image
        )
        try await bus.send(ConversationCommand.sandboxReady.rawValue, ready, to: topology.conversationQueue)
    }

    func sendFailed(
        conversation: UUID,
        sandbox: UUID?,
        backend: RuntimeSettings.Backend? = nil,
        code: DeckhandError.Code,
        reason: String
    ) async throws {
        RuntimeMetrics.provision(backend, .failed)
        let failed = SandboxFailed(
            conversationID: conversation,
            sandboxID: sandbox,
            code: code.rawValue,
            reason: reason
        )
        try await bus.send(ConversationCommand.sandboxFailed.rawValue, failed, to: topology.conversationQueue)
    }

    /// Publishes a status change on `sandbox.<id>`; a failure to publish is logged, never fatal.
    func announce(_ record: SandboxRecord, _ status: String, reason: String? = nil) async {
        let event = SandboxStatusEvent(
            sandboxID: record.id,
            conversationID: record.conversationID,
            status: status,
            backend: record.backend,
            reason: reason
        )
        do {
            try await bus.publishEvent(
                "sandbox_status",
                event,
                routingKey: "sandbox.\(record.id.uuidString.lowercased())"
            )
        } catch {
            logger.warning("cannot publish a sandbox status event", metadata: [LogKey.error.rawValue: "\(error)"])
        }
    }

    /// Asks any worker to refill the warm pool (after a claim).
    func requestRefill() async {
        guard !settings.warmPool.isEmpty else { return }
        do {
            try await bus.send(RuntimeCommand.poolRefill.rawValue, [String: String](), to: topology.runtimeQueue)
        } catch {
            logger.warning("cannot request a pool refill", metadata: [LogKey.error.rawValue: "\(error)"])
        }
    }
}
