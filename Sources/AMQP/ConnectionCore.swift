import CRabbitMQ
import DeckhandCore
import DeckhandPOSIX
import Foundation
import Logging
import Synchronization

private let adminChannel: amqp_channel_t = 1
private let publishChannel: amqp_channel_t = 2
private let firstConsumerChannel: amqp_channel_t = 3
private let sweepInterval: Duration = .milliseconds(100)
private let maxFramesPerTurn = 2000

/// The connection thread: the only code that touches the librabbitmq connection state.
///
/// Each turn of ``run()`` takes the commands callers queued, sends what is ready (publishes up to the confirm
/// window, coalesced acks), reads every frame that arrived, checks deadlines, and then sleeps in `poll` on the
/// socket and the wake-up pipe for at most 100 ms, which also keeps heartbeats flowing.
final class ConnectionCore {
    private struct ActiveConsumer {
        let registration: ConsumerRegistration
        var channel: amqp_channel_t
        var coalescer = AckCoalescer()
    }

    private let shared: ConnectionShared
    private var configuration: AMQPConnection.Configuration { shared.configuration }
    private var logger: Logger { shared.logger }
    private var firstConnect: CheckedContinuation<Void, any Error>?

    private var connection: amqp_connection_state_t?
    private var generation: UInt64 = 0
    private var topology = TopologyRecord()
    private var backoff: Backoff
    private var reconnectAt: ContinuousClock.Instant?
    /// The broker of the URL it is (or was last) connected to.
    private var preferredEndpoint = 0
    private var lastInbound = ContinuousClock.now
    private var lastSweep = ContinuousClock.now
    /// When a `basic.nack` last made the connection start over (at most once a second).
    private var lastNackRecycle: ContinuousClock.Instant?
    private let arena = CArena()

    private var waitingTopology:
        [(TopologyOperation, ContinuousClock.Instant, CheckedContinuation<TopologyResult, any Error>)] = []
    private var waitingConsumers:
        [(ConsumerRegistration, ContinuousClock.Instant, CheckedContinuation<Void, any Error>)] = []

    /// Publishes not yet sent, oldest first, from `pendingHead` on.
    private var pending: [PendingPublish] = []
    private var pendingHead = 0
    private var confirms = ConfirmTracker<PendingPublish>()
    /// Publishes whose caller was already answered (cancelled or timed out) while they await a confirm.
    private var abandoned: Set<UInt64> = []
    /// Sent requests awaiting their reply, by correlation id.
    private var requests: [String: PendingPublish] = [:]

    private var consumers: [Int: ActiveConsumer] = [:]
    private var consumerByChannel: [amqp_channel_t: Int] = [:]
    private var dirtyConsumers: Set<Int> = []
    private var freeChannels: [amqp_channel_t] = []
    private var nextChannel = firstConsumerChannel

    private var closing = false
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []

    init(shared: ConnectionShared, firstConnect: CheckedContinuation<Void, any Error>) {
        self.shared = shared
        self.firstConnect = firstConnect
        self.backoff = Backoff(minimum: shared.configuration.reconnectMin, maximum: shared.configuration.reconnectMax)
    }

    // MARK: The loop

    func run() {
        do {
            try establish()
            firstConnect?.resume()
            firstConnect = nil
        } catch {
            teardown()
            firstConnect?.resume(throwing: error)
            for command in shared.takeCommands(closing: true) { command.fail(error) }
            return
        }
        while true {
            shared.wakePipe.drain()
            for command in shared.takeCommands(closing: closing) { handle(command) }
            if connection == nil, let reconnectAt, ContinuousClock.now >= reconnectAt { reconnect() }
            if connection != nil {
                sendPublishes()
                flushSettlements()
                readFrames()
            }
            if ContinuousClock.now - lastSweep >= sweepInterval { sweep() }
            if closing && pendingHead == pending.count && confirms.inFlight == 0 && requests.isEmpty {
                finishClose()
                return
            }
            waitForWork()
        }
    }

    private func waitForWork() {
        if let connection {
            if amqp_frames_enqueued(connection) != 0 || amqp_data_in_buffer(connection) != 0 { return }
            if pendingHead < pending.count && confirms.inFlight < configuration.confirmWindow { return }
        }
        var fds = [shared.wakePipe.pollDescriptor]
        if let connection {
            fds.append(pollfd(fd: amqp_get_sockfd(connection), events: Int16(POLLIN), revents: 0))
        }
        var timeout = sweepInterval
        if connection == nil, let reconnectAt {
            timeout = max(.zero, min(timeout, reconnectAt - ContinuousClock.now))
        }
        let ready = poll(&fds, nfds_t(fds.count), timeout.pollMilliseconds)
        if ready > 0, fds.count > 1, fds[1].revents != 0 { lastInbound = .now }
    }

    private func handle(_ command: Command) {
        switch command {
        case .topology(let operation, let deadline, let continuation):
            if closing { return command.fail(closedError()) }
            guard connection != nil else { return waitingTopology.append((operation, deadline, continuation)) }
            runTopology(operation, deadline: deadline, continuation: continuation)
        case .publish(let publish):
            pending.append(publish)
        case .abandon(let id):
            abandon(id)
        case .consume(let registration, let deadline, let continuation):
            if closing { return command.fail(closedError()) }
            guard connection != nil else { return waitingConsumers.append((registration, deadline, continuation)) }
            addConsumer(registration, deadline: deadline, continuation: continuation)
        case .settle(let consumerID, let generation, let tag, let kind):
            guard generation == self.generation, connection != nil, consumers[consumerID] != nil else { return }
            consumers[consumerID]!.coalescer.settle(tag, kind)
            dirtyConsumers.insert(consumerID)
        case .cancelConsumer(let id, let continuation):
            cancelConsumer(id)
            continuation?.resume()
        case .close(let continuation):
            if let continuation { closeWaiters.append(continuation) }
            beginClose()
        }
    }

    // MARK: Connecting

    /// A connection to `endpoint`, logged in; throws what went wrong.
    private func open(_ endpoint: AMQPURL.Endpoint) throws(DeckhandError) -> amqp_connection_state_t {
        guard let state = amqp_new_connection() else {
            throw DeckhandError(.internalError, "amqp_new_connection failed")
        }
        let url = configuration.url
        let address = "\(endpoint.host):\(endpoint.port)"
        guard let socket = amqp_tcp_socket_new(state) else {
            amqp_destroy_connection(state)
            throw DeckhandError(.internalError, "amqp_tcp_socket_new failed")
        }
        var timeout = timeval(configuration.connectTimeout)
        let opened = amqp_socket_open_noblock(socket, endpoint.host, Int32(endpoint.port), &timeout)
        guard opened == AMQP_STATUS_OK.rawValue else {
            amqp_destroy_connection(state)
            throw DeckhandError(.unavailable, "cannot reach RabbitMQ at \(address): \(amqpErrorString(opened))")
        }
        amqp_set_handshake_timeout(state, &timeout)
        amqp_set_rpc_timeout(state, &timeout)
        // librabbitmq announces only `authentication_failure_close`; without `connection.blocked` the broker
        // blocks a publishing connection during a resource alarm without saying so, and the gateway cannot
        // answer 503 at once. Consumer cancellations are handled too (a deleted queue ends its consumer).
        var properties = arena.table([
            "connection_name": .string(configuration.name),
            "capabilities": .table([
                "authentication_failure_close": .bool(true), "connection.blocked": .bool(true),
                "consumer_cancel_notify": .bool(true),
            ]),
        ])
        let login = deckhand_amqp_login_plain(
            state,
            url.vhost,
            0,
            131_072,
            Int32(configuration.heartbeat.components.seconds),
            &properties,
            url.user,
            url.password
        )
        arena.reset()
        guard login.reply_type == AMQP_RESPONSE_NORMAL else {
            let reason = describe(login)
            amqp_destroy_connection(state)
            throw DeckhandError(
                .unavailable,
                "RabbitMQ at \(address) refused the login of user '\(url.user)' to vhost '\(url.vhost)': \(reason)"
            )
        }
        return state
    }

    /// Connects to the first broker of the URL that answers and logs in: at first from the first; on a
    /// reconnect from the one after the broker it had (a cluster's nodes in turn, so a lost node's clients move
    /// to another without waiting out a connect timeout on it first).
    private func establish() throws(DeckhandError) {
        let url = configuration.url
        var failures: [DeckhandError] = []
        var opened: amqp_connection_state_t?
        let first = generation == 0 ? 0 : preferredEndpoint + 1
        for offset in 0..<url.endpoints.count {
            let index = (first + offset) % url.endpoints.count
            do {
                opened = try open(url.endpoints[index])
                preferredEndpoint = index
                break
            } catch {
                failures.append(error)
            }
        }
        guard let state = opened else {
            guard failures.count > 1 else { throw failures[0] }
            throw DeckhandError(
                .unavailable,
                "no RabbitMQ broker of \(url.redacted) answered: "
                    + failures.map(\.message).joined(separator: "; ")
            )
        }
        connection = state
        generation += 1
        lastInbound = .now
        do {
            try openPublishAndAdminChannels()
            try restoreTopology()
            try restoreConsumers()
        } catch {
            disconnect(error.message)
            throw error
        }
        let version = decodeTable(amqp_get_server_properties(state).pointee)["version"]?.stringValue
        shared.status.withLock {
            $0.connected = true
            $0.connections += 1
            $0.serverVersion = version
            $0.blocked = false
        }
        backoff.reset()
        reconnectAt = nil
        let topologyWaiting = waitingTopology
        waitingTopology.removeAll()
        for (operation, deadline, continuation) in topologyWaiting {
            runTopology(operation, deadline: deadline, continuation: continuation)
        }
        let consumersWaiting = waitingConsumers
        waitingConsumers.removeAll()
        for (registration, deadline, continuation) in consumersWaiting {
            addConsumer(registration, deadline: deadline, continuation: continuation)
        }
    }

    private func reconnect() {
        do {
            try establish()
            logger.info("AMQP connection re-established", metadata: [LogKey.amqpGeneration.rawValue: "\(generation)"])
        } catch {
            teardown()
            shared.status.withLock { $0.lastError = error.message }
            reconnectAt = .now + backoff.next()
            logger.debug("AMQP reconnect failed", metadata: [LogKey.error.rawValue: "\(error.message)"])
        }
    }

    private func openPublishAndAdminChannels() throws(DeckhandError) {
        try openChannel(adminChannel)
        try openPublishChannel()
    }

    private func openPublishChannel() throws(DeckhandError) {
        guard let connection else { throw lost("not connected") }
        try openChannel(publishChannel)
        amqp_confirm_select(connection, publishChannel)
        try check("confirm.select", channel: publishChannel)
        // Direct reply-to: consumed without acks on the channel that publishes requests.
        _ = amqp_basic_consume(
            connection,
            publishChannel,
            amqp_cstring_bytes(directReplyTo),
            amqp_empty_bytes,
            0,
            1,
            0,
            amqp_empty_table
        )
        try check("consume \(directReplyTo)", channel: publishChannel)
    }

    private func openChannel(_ channel: amqp_channel_t) throws(DeckhandError) {
        guard let connection else { throw lost("not connected") }
        amqp_channel_open(connection, channel)
        try check("channel.open \(channel)", channel: channel)
    }

    /// Declares again what was declared. An exclusive queue that the broker still holds for the previous
    /// connection (it has not noticed that connection is gone) fails the whole attempt, so the reconnect is
    /// retried after the back-off instead of going on without the queue; other refusals are logged.
    private func restoreTopology() throws(DeckhandError) {
        let record = topology
        var operations: [TopologyOperation] = record.exchanges.map { .declareExchange($0) }
        operations += record.queues.map { .declareQueue($0) }
        operations += record.bindings.map { .bind($0) }
        for operation in operations {
            do {
                _ = try perform(operation)
            } catch  where error.code == .unavailable {
                throw error
            } catch  where (error.underlying as? AMQPRefusal)?.replyCode == AMQPRefusal.resourceLocked {
                throw lost("\(error.message) (the broker still holds it for the previous connection)")
            } catch {
                logger.error(
                    "AMQP topology could not be declared again after reconnect",
                    metadata: [LogKey.error.rawValue: "\(error.message)"]
                )
            }
        }
    }

    private func restoreConsumers() throws(DeckhandError) {
        for id in consumers.keys.sorted() {
            guard var consumer = consumers[id] else { continue }
            do {
                consumer.channel = try startConsumer(consumer.registration)
                consumer.coalescer.reset()
                consumers[id] = consumer
                consumerByChannel[consumer.channel] = id
            } catch  where error.code == .unavailable {
                throw error
            } catch {
                consumers[id] = nil
                consumer.registration.continuation.finish(throwing: error)
            }
        }
    }

    /// Forgets the broken connection: unconfirmed publishes go back to the front of the queue, requests
    /// awaiting replies fail, consumers wait for the reconnect.
    private func disconnect(_ reason: String) {
        guard connection != nil else { return }
        logger.warning("AMQP connection lost; reconnecting", metadata: [LogKey.error.rawValue: "\(reason)"])
        teardown()
        shared.status.withLock {
            $0.connected = false
            $0.lastError = reason
        }
        var resend: [PendingPublish] = []
        for publish in confirms.reset() {
            if abandoned.remove(publish.id) != nil { continue }
            if case .request = publish.completion { continue }
            resend.append(publish)
        }
        abandoned.removeAll()
        let lostRequests = requests.values
        requests.removeAll()
        for request in lostRequests {
            request.completion.fail(
                DeckhandError(.unavailable, "the AMQP connection was lost before the reply arrived (\(reason))")
            )
        }
        pending = resend + pending[pendingHead...]
        pendingHead = 0
        for id in consumers.keys { consumers[id]!.coalescer.reset() }
        consumerByChannel.removeAll()
        dirtyConsumers.removeAll()
        freeChannels.removeAll()
        nextChannel = firstConsumerChannel
        reconnectAt = .now + backoff.next()
    }

    /// A channel the broker nacked on may go on nacking: RabbitMQ's channel keeps its own view of a quorum queue's
    /// members, and once a broker node has stopped it can refuse every later publish to that queue while a new
    /// channel would be served. The refused publish has failed already (its caller retries it); the ones still
    /// unconfirmed go out again on a new connection. At most once a second, so a queue that refuses for a reason
    /// of its own (`x-overflow: reject-publish`) does not make the connection churn.
    private func recycleAfterNack() {
        let now = ContinuousClock.now
        if let last = lastNackRecycle, now - last < .seconds(1) { return }
        lastNackRecycle = now
        disconnect("the broker refused a publish (basic.nack): starting over on a new channel")
    }

    private func teardown() {
        guard let state = connection else { return }
        amqp_destroy_connection(state)
        connection = nil
    }

    // MARK: Topology

    private func runTopology(
        _ operation: TopologyOperation,
        deadline: ContinuousClock.Instant,
        continuation: CheckedContinuation<TopologyResult, any Error>
    ) {
        do {
            continuation.resume(returning: try perform(operation))
        } catch  where error.code == .unavailable {
            disconnect(error.message)
            waitingTopology.append((operation, deadline, continuation))
        } catch {
            continuation.resume(throwing: error)
        }
    }

    private func perform(_ operation: TopologyOperation) throws(DeckhandError) -> TopologyResult {
        guard let connection else { throw lost("not connected") }
        defer { arena.reset() }
        var result = TopologyResult()
        switch operation {
        case .declareExchange(let exchange):
            amqp_exchange_declare(
                connection,
                adminChannel,
                arena.bytes(exchange.name),
                arena.bytes(exchange.kind.rawValue),
                0,
                exchange.durable ? 1 : 0,
                exchange.autoDelete ? 1 : 0,
                0,
                arena.table(exchange.arguments)
            )
            try check("declare exchange '\(exchange.name)'", channel: adminChannel)
            topology.add(exchange)
        case .declareQueue(let queue):
            let ok = amqp_queue_declare(
                connection,
                adminChannel,
                arena.bytes(queue.name),
                0,
                queue.durable ? 1 : 0,
                queue.exclusive ? 1 : 0,
                queue.autoDelete ? 1 : 0,
                arena.table(queue.declarationArguments)
            )
            try check("declare queue '\(queue.name)'", channel: adminChannel)
            if let ok {
                result.messageCount = Int(ok.pointee.message_count)
                result.consumerCount = Int(ok.pointee.consumer_count)
            }
            topology.add(queue)
        case .inspectQueue(let name):
            let ok = amqp_queue_declare(connection, adminChannel, arena.bytes(name), 1, 0, 0, 0, amqp_empty_table)
            try check("inspect queue '\(name)'", channel: adminChannel)
            if let ok {
                result.messageCount = Int(ok.pointee.message_count)
                result.consumerCount = Int(ok.pointee.consumer_count)
            }
        case .bind(let binding):
            amqp_queue_bind(
                connection,
                adminChannel,
                arena.bytes(binding.queue),
                arena.bytes(binding.exchange),
                arena.bytes(binding.routingKey),
                amqp_empty_table
            )
            try check("bind '\(binding.queue)' to '\(binding.exchange)'", channel: adminChannel)
            topology.add(binding)
        case .unbind(let binding):
            amqp_queue_unbind(
                connection,
                adminChannel,
                arena.bytes(binding.queue),
                arena.bytes(binding.exchange),
                arena.bytes(binding.routingKey),
                amqp_empty_table
            )
            try check("unbind '\(binding.queue)' from '\(binding.exchange)'", channel: adminChannel)
            topology.remove(binding)
        case .deleteQueue(let name):
            let ok = amqp_queue_delete(connection, adminChannel, arena.bytes(name), 0, 0)
            try check("delete queue '\(name)'", channel: adminChannel)
            result.messageCount = Int(ok?.pointee.message_count ?? 0)
            topology.removeQueue(named: name)
        case .deleteExchange(let name):
            amqp_exchange_delete(connection, adminChannel, arena.bytes(name), 0)
            try check("delete exchange '\(name)'", channel: adminChannel)
            topology.removeExchange(named: name)
        case .purgeQueue(let name):
            let ok = amqp_queue_purge(connection, adminChannel, arena.bytes(name))
            try check("purge queue '\(name)'", channel: adminChannel)
            result.messageCount = Int(ok?.pointee.message_count ?? 0)
        }
        return result
    }

    // MARK: Consumers

    private func addConsumer(
        _ registration: ConsumerRegistration,
        deadline: ContinuousClock.Instant,
        continuation: CheckedContinuation<Void, any Error>
    ) {
        do {
            let channel = try startConsumer(registration)
            consumers[registration.id] = ActiveConsumer(registration: registration, channel: channel)
            consumerByChannel[channel] = registration.id
            continuation.resume()
        } catch  where error.code == .unavailable {
            disconnect(error.message)
            waitingConsumers.append((registration, deadline, continuation))
        } catch {
            registration.continuation.finish(throwing: error)
            continuation.resume(throwing: error)
        }
    }

    private func startConsumer(_ registration: ConsumerRegistration) throws(DeckhandError) -> amqp_channel_t {
        guard let connection else { throw lost("not connected") }
        let channel = freeChannels.popLast() ?? nextChannel
        if channel == nextChannel { nextChannel += 1 }
        defer { arena.reset() }
        do {
            try openChannel(channel)
            amqp_basic_qos(connection, channel, 0, UInt16(clamping: registration.prefetch), 0)
            try check("basic.qos", channel: channel)
            amqp_basic_consume(
                connection,
                channel,
                arena.bytes(registration.queue),
                arena.bytes(registration.tag),
                0,
                0,
                registration.exclusive ? 1 : 0,
                amqp_empty_table
            )
            try check("consume queue '\(registration.queue)'", channel: channel)
        } catch {
            if error.code != .unavailable { freeChannels.append(channel) }
            throw error
        }
        return channel
    }

    private func cancelConsumer(_ id: Int) {
        if let index = waitingConsumers.firstIndex(where: { $0.0.id == id }) {
            let (registration, _, continuation) = waitingConsumers.remove(at: index)
            registration.continuation.finish()
            continuation.resume(throwing: CancellationError())
            return
        }
        guard let consumer = consumers.removeValue(forKey: id) else { return }
        consumer.registration.state.stopped.store(true, ordering: .releasing)
        if let connection, consumerByChannel[consumer.channel] == id {
            // CLIBS.md pitfall 5: flush the acks, wait for cancel-ok, then close the channel.
            var coalescer = consumer.coalescer
            if send(coalescer.flush(), channel: consumer.channel) {
                amqp_basic_cancel(connection, consumer.channel, arena.bytes(consumer.registration.tag))
                arena.reset()
                do {
                    try check("basic.cancel", channel: consumer.channel)
                    amqp_channel_close(connection, consumer.channel, AMQP_REPLY_SUCCESS)
                    consumerByChannel[consumer.channel] = nil
                    freeChannels.append(consumer.channel)
                } catch  where error.code == .unavailable {
                    disconnect(error.message)
                } catch {
                    consumerByChannel[consumer.channel] = nil
                }
            }
        }
        dirtyConsumers.remove(id)
        consumer.registration.continuation.finish()
    }

    private func flushSettlements() {
        for id in dirtyConsumers {
            guard connection != nil, var consumer = consumers[id] else { continue }
            let frames = consumer.coalescer.flush()
            consumers[id] = consumer
            guard send(frames, channel: consumer.channel) else { return }
        }
        dirtyConsumers.removeAll()
    }

    /// Sends ack frames; `false` (and a disconnect) when the socket failed.
    private func send(_ frames: [AckCoalescer.Frame], channel: amqp_channel_t) -> Bool {
        guard let connection else { return false }
        for frame in frames {
            let status: Int32
            switch frame {
            case .ack(let tag, let multiple):
                status = amqp_basic_ack(connection, channel, tag, multiple ? 1 : 0)
            case .nack(let tag, let requeue):
                status = amqp_basic_nack(connection, channel, tag, 0, requeue ? 1 : 0)
            case .reject(let tag, let requeue):
                status = amqp_basic_reject(connection, channel, tag, requeue ? 1 : 0)
            }
            if status != AMQP_STATUS_OK.rawValue {
                disconnect("sending an ack: \(amqpErrorString(status))")
                return false
            }
        }
        return true
    }

    // MARK: Publishing

    private func sendPublishes() {
        while let connection, pendingHead < pending.count, confirms.inFlight < configuration.confirmWindow {
            let publish = pending[pendingHead]
            var properties = arena.properties(publish.message.properties)
            let status = publish.message.body.withUnsafeBytes { body in
                amqp_basic_publish(
                    connection,
                    publishChannel,
                    arena.bytes(publish.exchange),
                    arena.bytes(publish.routingKey),
                    publish.mandatory ? 1 : 0,
                    0,
                    &properties,
                    amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress))
                )
            }
            arena.reset()
            guard status == AMQP_STATUS_OK.rawValue else {
                disconnect("publishing: \(amqpErrorString(status))")
                return
            }
            pendingHead += 1
            confirms.published(messageID: publish.message.properties.messageID, payload: publish)
            if case .request = publish.completion, let correlationID = publish.message.properties.correlationID {
                requests[correlationID] = publish
            }
        }
        if pendingHead > 1024 && pendingHead * 2 > pending.count {
            pending.removeSubrange(..<pendingHead)
            pendingHead = 0
        }
    }

    private func complete(_ outcomes: [(PendingPublish, ConfirmTracker<PendingPublish>.Outcome)]) {
        for (publish, outcome) in outcomes {
            if abandoned.remove(publish.id) != nil { continue }
            let error: DeckhandError?
            switch outcome {
            case .confirmed:
                error = nil
            case .nacked:
                error = DeckhandError(
                    .amqpNacked,
                    "the broker refused the message for exchange '\(publish.exchange)' (basic.nack)"
                )
            case .returned(let reason):
                error = DeckhandError(.amqpUnroutable, "the message could not be routed: \(reason)")
            }
            switch publish.completion {
            case .publish(let continuation):
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            case .request:
                guard let error, let id = publish.message.properties.correlationID,
                    let request = requests.removeValue(forKey: id)
                else { continue }
                request.completion.fail(error)
            }
        }
    }

    private func abandon(_ id: UInt64) {
        if let index = pending[pendingHead...].firstIndex(where: { $0.id == id }) {
            pending.remove(at: index).completion.fail(CancellationError())
            return
        }
        if let (correlationID, request) = requests.first(where: { $0.value.id == id }) {
            requests[correlationID] = nil
            request.completion.fail(CancellationError())
            return
        }
        if let found = confirms.payloads.first(where: { $0.id == id }), !abandoned.contains(id) {
            abandoned.insert(id)
            found.completion.fail(CancellationError())
        }
    }

    // MARK: Reading

    private func readFrames() {
        var frame = amqp_frame_t()
        var immediately = timeval(tv_sec: 0, tv_usec: 0)
        var count = 0
        while let connection, count < maxFramesPerTurn {
            let status = amqp_simple_wait_frame_noblock(connection, &frame, &immediately)
            if status == AMQP_STATUS_TIMEOUT.rawValue { break }
            guard status == AMQP_STATUS_OK.rawValue else {
                disconnect("reading: \(amqpErrorString(status))")
                return
            }
            count += 1
            lastInbound = .now
            guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { continue }
            handleMethod(channel: frame.channel, method: frame.payload.method)
        }
        if let connection { amqp_maybe_release_buffers(connection) }
    }

    private func handleMethod(channel: amqp_channel_t, method: amqp_method_t) {
        guard let connection else { return }
        switch method.id {
        case DECKHAND_AMQP_BASIC_DELIVER:
            let deliver = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            let tag = deliver.delivery_tag
            let redelivered = deliver.redelivered != 0
            let exchange = deliver.exchange.string
            let routingKey = deliver.routing_key.string
            guard let message = readMessage(channel: channel) else { return }
            if channel == publishChannel {
                if let id = message.properties.correlationID, let request = requests.removeValue(forKey: id),
                    case .request(let continuation, _) = request.completion
                {
                    continuation.resume(
                        returning: AMQPDelivery(
                            message: message,
                            exchange: exchange,
                            routingKey: routingKey,
                            redelivered: redelivered,
                            deliveryTag: tag,
                            settlement: nil
                        )
                    )
                }
                return
            }
            guard let id = consumerByChannel[channel], consumers[id] != nil else { return }
            consumers[id]!.coalescer.delivered(tag)
            let delivery = AMQPDelivery(
                message: message,
                exchange: exchange,
                routingKey: routingKey,
                redelivered: redelivered,
                deliveryTag: tag,
                settlement: .init(connection: shared, consumerID: id, generation: generation)
            )
            consumers[id]!.registration.continuation.yield(delivery)
        case DECKHAND_AMQP_BASIC_ACK:
            let ack = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            complete(confirms.ack(ack.delivery_tag, multiple: ack.multiple != 0))
        case DECKHAND_AMQP_BASIC_NACK:
            let nack = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            complete(confirms.nack(nack.delivery_tag, multiple: nack.multiple != 0))
            recycleAfterNack()
        case DECKHAND_AMQP_BASIC_RETURN:
            let returned = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            let reason =
                "\(returned.reply_code) \(returned.reply_text.string) (exchange '\(returned.exchange.string)', "
                + "routing key '\(returned.routing_key.string)')"
            guard let message = readMessage(channel: channel) else { return }
            confirms.returned(messageID: message.properties.messageID, reason: reason)
        case DECKHAND_AMQP_BASIC_CANCEL:
            guard let id = consumerByChannel[channel], let consumer = consumers.removeValue(forKey: id) else { return }
            consumerByChannel[channel] = nil
            consumer.registration.state.stopped.store(true, ordering: .releasing)
            consumer.registration.continuation.finish(
                throwing: DeckhandError(
                    .amqpRefused,
                    "the broker cancelled the consumer of queue '\(consumer.registration.queue)' (was it deleted?)"
                )
            )
            amqp_channel_close(connection, channel, AMQP_REPLY_SUCCESS)
        case DECKHAND_AMQP_CHANNEL_CLOSE:
            let close = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            var ok = amqp_channel_close_ok_t()
            amqp_send_method(connection, channel, DECKHAND_AMQP_CHANNEL_CLOSE_OK, &ok)
            channelClosed(channel, reason: "\(close.reply_code) \(close.reply_text.string)")
        case DECKHAND_AMQP_CONNECTION_CLOSE:
            let close = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t()
            amqp_send_method(connection, 0, DECKHAND_AMQP_CONNECTION_CLOSE_OK, &ok)
            disconnect("the broker closed the connection: \(close.reply_code) \(close.reply_text.string)")
        case DECKHAND_AMQP_CONNECTION_BLOCKED:
            logger.warning("RabbitMQ blocked this connection (resource alarm): publishes wait")
            shared.status.withLock { $0.blocked = true }
        case DECKHAND_AMQP_CONNECTION_UNBLOCKED:
            logger.notice("RabbitMQ unblocked this connection")
            shared.status.withLock { $0.blocked = false }
        default:
            break
        }
    }

    private func readMessage(channel: amqp_channel_t) -> AMQPMessage? {
        guard let connection else { return nil }
        var message = amqp_message_t()
        let reply = amqp_read_message(connection, channel, &message, 0)
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            disconnect("reading a message: \(describe(reply))")
            return nil
        }
        defer { amqp_destroy_message(&message) }
        return AMQPMessage(body: message.body.array, properties: decodeProperties(message.properties))
    }

    /// The broker closed a channel outside an RPC: a publish to a missing exchange, a consumer's queue gone.
    private func channelClosed(_ channel: amqp_channel_t, reason: String) {
        let error = DeckhandError(.amqpRefused, "the broker closed channel \(channel): \(reason)")
        switch channel {
        case publishChannel:
            // Which message caused it is unknown: every unconfirmed one fails with the broker's reason.
            for publish in confirms.reset() where abandoned.remove(publish.id) == nil {
                if case .request = publish.completion, let id = publish.message.properties.correlationID {
                    requests[id] = nil
                }
                publish.completion.fail(error)
            }
            do { try openPublishChannel() } catch { disconnect(error.message) }
        case adminChannel:
            do { try openChannel(adminChannel) } catch { disconnect(error.message) }
        default:
            guard let id = consumerByChannel.removeValue(forKey: channel),
                let consumer = consumers.removeValue(forKey: id)
            else { return }
            consumer.registration.state.stopped.store(true, ordering: .releasing)
            consumer.registration.continuation.finish(throwing: error)
            freeChannels.append(channel)
        }
    }

    // MARK: Deadlines and closing

    private func sweep() {
        let now = ContinuousClock.now
        lastSweep = now
        if connection != nil, configuration.heartbeat > .zero, now - lastInbound > configuration.heartbeat * 2 {
            disconnect("no data from the broker for \(configuration.heartbeat * 2) (missed heartbeats)")
        }
        let (outage, blocked) = shared.status.withLock { ($0.lastError ?? "not connected", $0.blocked) }
        let late =
            blocked
            ? DeckhandError(.amqpBlocked, "RabbitMQ blocked publishing (a memory or disk alarm) until the deadline")
            : nil
        var index = pendingHead
        var failed = 0
        while index < pending.count {
            if pending[index].deadline <= now {
                failed += 1
                let publish = pending.remove(at: index)
                publish.completion.fail(
                    connection == nil
                        ? DeckhandError(.unavailable, "RabbitMQ was unavailable until the publish deadline (\(outage))")
                        : late ?? DeckhandError(.timeout, "the publish could not be sent before its deadline")
                )
            } else {
                index += 1
            }
        }
        let expired = confirms.payloads.filter { $0.deadline <= now && !abandoned.contains($0.id) }
        failed += expired.count
        if failed > 0 { shared.status.withLock { $0.expiredPublishes += failed } }
        for publish in expired {
            abandoned.insert(publish.id)
            if case .request = publish.completion, let id = publish.message.properties.correlationID {
                requests[id] = nil
            }
            publish.completion.fail(
                late ?? DeckhandError(.timeout, "the broker did not confirm the publish before its deadline")
            )
        }
        for (id, request) in requests where request.deadline <= now {
            requests[id] = nil
            if case .request(let continuation, let timeout) = request.completion {
                continuation.resume(throwing: DeckhandError(.timeout, "no reply to the request within \(timeout)"))
            }
        }
        let unavailable = DeckhandError(.unavailable, "RabbitMQ was unavailable until the deadline (\(outage))")
        waitingTopology.removeAll { entry in
            guard entry.1 <= now else { return false }
            entry.2.resume(throwing: unavailable)
            return true
        }
        waitingConsumers.removeAll { entry in
            guard entry.1 <= now else { return false }
            entry.0.continuation.finish(throwing: unavailable)
            entry.2.resume(throwing: unavailable)
            return true
        }
    }

    private func beginClose() {
        guard !closing else { return }
        closing = true
        for command in shared.takeCommands(closing: true) { handle(command) }
        flushSettlements()
        for id in consumers.keys.sorted() { cancelConsumer(id) }
        for (operation, _, continuation) in waitingTopology {
            Command.topology(operation, deadline: .now, continuation).fail(closedError())
        }
        waitingTopology.removeAll()
        for (registration, _, continuation) in waitingConsumers {
            registration.continuation.finish()
            continuation.resume(throwing: closedError())
        }
        waitingConsumers.removeAll()
    }

    private func finishClose() {
        if let connection {
            amqp_channel_close(connection, publishChannel, AMQP_REPLY_SUCCESS)
            amqp_channel_close(connection, adminChannel, AMQP_REPLY_SUCCESS)
            amqp_connection_close(connection, AMQP_REPLY_SUCCESS)
        }
        teardown()
        shared.status.withLock { $0.connected = false }
        for waiter in closeWaiters { waiter.resume() }
        closeWaiters.removeAll()
    }

    private func closedError() -> DeckhandError {
        DeckhandError(.amqpClosed, "the AMQP connection is closing")
    }

    // MARK: Replies

    private func lost(_ reason: String) -> DeckhandError {
        DeckhandError(.unavailable, reason)
    }

    /// Checks the last RPC; a channel closed by the broker is acknowledged (and the admin channel reopened).
    private func check(_ what: String, channel: amqp_channel_t) throws(DeckhandError) {
        guard let connection else { throw lost("\(what): not connected") }
        let reply = amqp_get_rpc_reply(connection)
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == DECKHAND_AMQP_CHANNEL_CLOSE:
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let reason = "\(close.reply_code) \(close.reply_text.string)"
            var ok = amqp_channel_close_ok_t()
            amqp_send_method(connection, channel, DECKHAND_AMQP_CHANNEL_CLOSE_OK, &ok)
            if channel == adminChannel { try openChannel(adminChannel) }
            throw DeckhandError(
                .amqpRefused,
                "\(what): the broker refused: \(reason)",
                underlying: AMQPRefusal(replyCode: close.reply_code, replyText: close.reply_text.string)
            )
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == DECKHAND_AMQP_CONNECTION_CLOSE:
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t()
            amqp_send_method(connection, 0, DECKHAND_AMQP_CONNECTION_CLOSE_OK, &ok)
            throw lost("\(what): the broker closed the connection: \(close.reply_code) \(close.reply_text.string)")
        default:
            throw lost("\(what): \(describe(reply))")
        }
    }

    private func describe(_ reply: amqp_rpc_reply_t) -> String {
        switch reply.reply_type {
        case AMQP_RESPONSE_LIBRARY_EXCEPTION: return amqpErrorString(reply.library_error)
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == DECKHAND_AMQP_CONNECTION_CLOSE {
                let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                return "\(close.reply_code) \(close.reply_text.string)"
            }
            return "server exception \(reply.reply.id)"
        case AMQP_RESPONSE_NONE: return "no reply"
        default: return "unknown reply"
        }
    }
}

extension timeval {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}
