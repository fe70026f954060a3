import AMQP
import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import Logging
import Messaging
import Postgres
import RuntimeBackends
import RuntimeManager
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A runtime-manager test bed: a schema of its own (migrated), a namespaced topology on the test broker, a
/// folder for process sandboxes, a consumer of what the workers send to conversations, and factories for
/// workers. Everything is removed afterwards, sandboxes included.
public final class TestRuntime: Sendable {
    public let namespace: String
    public let postgresURL: String
    public let postgres: PostgresClient
    public let connection: AMQPConnection
    public let topology: Topology
    public let bus: CommandBus
    public let store: SandboxStore
    public let http: HTTPClient
    /// Where process sandboxes of this test live.
    public let processRoot: String
    private let replies: AMQPConsumer?
    private let inbox: ReplyInbox
    /// The nodes whose runtime workers ran here (each declares its node's queue, removed at the end).
    private let nodes = Mutex<Set<String>>([])

    private init(
        namespace: String,
        postgresURL: String,
        postgres: PostgresClient,
        connection: AMQPConnection,
        consumeReplies: Bool
    ) async throws {
        self.namespace = namespace
        self.postgresURL = postgresURL
        self.postgres = postgres
        self.connection = connection
        topology = Topology(namespace: namespace)
        bus = CommandBus(connection: connection, topology: topology)
        store = SandboxStore(postgres: postgres, deployment: namespace)
        http = try HTTPClient()
        processRoot = FileManager.default.temporaryDirectory.appendingPathComponent(namespace).path + "/" + namespace
        try await topology.declare(on: connection)
        inbox = ReplyInbox()
        guard consumeReplies else {
            replies = nil
            return
        }
        let replies = try await connection.consume(queue: topology.conversationQueue, prefetch: 1000)
        self.replies = replies
        let inbox = inbox
        Task {
            do {
                for try await delivery in replies {
                    inbox.add(delivery)
                    delivery.ack()
                }
            } catch {}
        }
    }

    /// Runs `body` with a fresh test bed and tears it down afterwards (the sandboxes of its backends included).
    /// Without `consumeReplies`, nothing here consumes `conversation.commands` (conversation workers do).
    public static func with<T: Sendable>(
        consumeReplies: Bool = true,
        _ body: (TestRuntime) async throws -> T
    ) async throws -> T {
        try await TestPostgres.withSchemaURL { url in
            let namespace = TestEnvironment.uniqueName("rt")
            let postgres = PostgresClient(url: url, poolSize: 8, acquireTimeout: .seconds(20))
            try await DeckhandSchema.migrate(postgres)
            let connection = try await TestAMQP.connect(name: namespace)
            let runtime = try await TestRuntime(
                namespace: namespace,
                postgresURL: url,
                postgres: postgres,
                connection: connection,
                consumeReplies: consumeReplies
            )
            let result: Result<T, any Error>
            do {
                result = .success(try await body(runtime))
            } catch {
                result = .failure(error)
            }
            await runtime.tearDown()
            return try result.get()
        }
    }

    private func tearDown() async {
        await replies?.cancel()
        // Remove every sandbox this test's deployment left (processes and containers).
        for backend in (try? makeBackends([.process, .docker])) ?? [] {
            for listed in (try? await backend.list()) ?? [] { try? await backend.destroy(listed.reference) }
        }
        try? FileManager.default.removeItem(
            atPath: FileManager.default.temporaryDirectory.appendingPathComponent(namespace).path
        )
        // Every worker of the bed's own node (in this process or a child) declared its node's queue too.
        for queue in nodes.withLock({ $0.union([store.node]) }).map(topology.runtimeNodeQueue) {
            _ = try? await connection.deleteQueue(queue)
        }
        for queue in topology.workQueues {
            for delay in RetryDelay.allCases {
                _ = try? await connection.deleteQueue(topology.retryQueue(for: queue, delay: delay))
            }
            _ = try? await connection.deleteQueue(queue)
        }
        _ = try? await connection.deleteQueue(topology.deadQueue)
        try? await connection.deleteExchange(topology.commandsExchange)
        try? await connection.deleteExchange(topology.eventsExchange)
        await connection.close()
        await http.shutdown()
        await postgres.close()
    }

    // MARK: Backends and workers

    /// Docker settings for tests: Deckhand's own bridge network on 198.18.1.0/24 (the test dockerd has no
    /// default bridge), small limits.
    public static var dockerSettings: DockerSettings {
        var settings = DockerSettings()
        settings.socket = TestEnvironment.dockerSocket
        settings.network = .bridge
        settings.bridgeNetwork = "deckhand-test-sandboxes"
        settings.bridgeSubnet = "198.18.1.0/24"
        settings.memoryBytes = 512 << 20
        settings.cpus = 1
        settings.pidsLimit = 256
        return settings
    }

    /// The sandbox image the test command built (`DECKHAND_SANDBOX_IMAGE`).
    public static var sandboxImage: String {
        ProcessInfo.processInfo.environment["DECKHAND_SANDBOX_IMAGE"] ?? "deckhand/sandbox:0.1.0"
    }

    public func makeBackends(
        _ kinds: [RuntimeSettings.Backend],
        settings: RuntimeSettings = TestRuntime.settings(),
        dockerSocket: String = TestEnvironment.dockerSocket,
        advertiseHost: String = "127.0.0.1",
        remote: RemoteSettings? = nil,
        modal: ModalSettings? = nil,
        docker: DockerSettings = TestRuntime.dockerSettings
    ) throws -> [any SandboxBackend] {
        let logger = Logger(label: "test.runtime")
        return try kinds.map { kind -> any SandboxBackend in
            switch kind {
            case .process:
                return try ProcessBackend(
                    root: processRoot,
                    settings: settings,
                    advertiseHost: advertiseHost,
                    logger: logger
                )
            case .docker:
                return DockerBackend(
                    socket: dockerSocket,
                    settings: docker,
                    deployment: namespace,
                    advertiseHost: advertiseHost,
                    client: http,
                    logger: logger
                )
            case .remote:
                guard let remote else {
                    throw DeckhandError(.invalidConfiguration, "a remote backend needs the Runtime API's settings")
                }
                return RemoteBackend(settings: remote, deployment: namespace, client: http, logger: logger)
            case .modal:
                guard let modal else {
                    throw DeckhandError(.invalidConfiguration, "a modal backend needs Modal's settings (a fake's)")
                }
                return ModalBackend(settings: modal, deployment: namespace, http: http, logger: logger)
            }
        }
    }

    /// Runtime settings for tests: short leases and timers, the test image.
    public static func settings(_ configure: (inout RuntimeSettings) -> Void = { _ in }) -> RuntimeSettings {
        var settings = RuntimeSettings()
        settings.image = sandboxImage
        settings.aliveTimeout = .seconds(30)
        settings.lease = .seconds(2)
        settings.maintenanceInterval = .seconds(3600)
        settings.idlePauseAfter = .zero
        settings.idleStopAfter = .zero
        settings.idleDestroyAfter = .zero
        settings.shutdownTimeout = .seconds(20)
        configure(&settings)
        return settings
    }

    /// A worker on this test bed's topology and schema; on `node` (its id and advertised address) when given,
    /// else on the bed's store's node at 127.0.0.1.
    public func makeWorker(
        settings: RuntimeSettings = TestRuntime.settings(),
        backends kinds: [RuntimeSettings.Backend] = [.process],
        dockerSocket: String = TestEnvironment.dockerSocket,
        prefetch: Int = 32,
        connection: AMQPConnection? = nil,
        consuming: AMQPConnection? = nil,
        store: SandboxStore? = nil,
        node: NodeSettings? = nil,
        remote: RemoteSettings? = nil,
        modal: ModalSettings? = nil,
        docker: DockerSettings = TestRuntime.dockerSettings
    ) throws -> RuntimeWorker {
        let store =
            store ?? node.map { SandboxStore(postgres: postgres, deployment: namespace, node: $0.id) } ?? self.store
        nodes.withLock { _ = $0.insert(store.node) }
        var configuration = RuntimeWorker.Configuration(
            settings: settings,
            defaultBackend: kinds[0],
            prefetch: prefetch
        )
        configuration.advertiseHost = node?.advertiseHost ?? "127.0.0.1"
        return RuntimeWorker(
            configuration: configuration,
            bus: CommandBus(connection: connection ?? self.connection, consuming: consuming, topology: topology),
            store: store,
            backends: try makeBackends(
                kinds,
                settings: settings,
                dockerSocket: dockerSocket,
                advertiseHost: node?.advertiseHost ?? "127.0.0.1",
                remote: remote,
                modal: modal,
                docker: docker
            ),
            http: http,
            logger: Logger(label: "test.runtime.worker")
        )
    }

    /// `deckhand runtime-worker` (beside the test binary) as a child process on this test bed: process
    /// sandboxes in ``processRoot``, a 2 s lease, its log in ``workerProcessLog``. `environment` adds or
    /// overrides `DECKHAND_*` variables.
    public func launchWorkerProcess(environment: [String: String] = [:]) throws -> Process {
        try launchDeckhand(
            ["runtime-worker", "--namespace", namespace],
            variables: [
                "DECKHAND_RUNTIME_BACKEND": "process",
                "DECKHAND_RUNTIME_WORKSPACE_ROOT": URL(fileURLWithPath: processRoot).deletingLastPathComponent().path,
                "DECKHAND_RUNTIME_LEASE": "2s",
                "DECKHAND_RUNTIME_MAINTENANCE_INTERVAL": "1h",
                "DECKHAND_LOG_LEVEL": "info",
            ].merging(environment) { $1 },
            log: workerProcessLogPath
        )
    }

    /// The `deckhand` executable beside the test binary.
    public static var deckhandBinary: String {
        let folder = URL(fileURLWithPath: ProcessBackend.defaultBinary).deletingLastPathComponent()
        return folder.appendingPathComponent("deckhand").path
    }

    /// What points a `deckhand` process at this test bed's schema and broker.
    private var bedVariables: [String: String] {
        ["DECKHAND_POSTGRES_URL": postgresURL, "DECKHAND_AMQP_URL": TestEnvironment.amqpURL]
    }

    /// Runs `deckhand <arguments>` on this test bed's schema and broker to its end (on a thread of its own) and
    /// returns its exit status and output (standard output and error together).
    public func deckhand(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await TestEnvironment.launchDetached(Self.deckhandBinary, arguments, environment: bedVariables)
    }

    /// `deckhand <arguments>` (beside the test binary) as a child process on this test bed's schema and
    /// broker, with `variables` added to the environment, its standard error appended to `log` and its standard
    /// output written to `standardOutput` (discarded when nil).
    public func launchDeckhand(
        _ arguments: [String],
        variables: [String: String],
        log: String,
        standardOutput: String? = nil
    ) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.deckhandBinary)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(bedVariables.merging(variables) { $1 }) {
            $1
        }
        try FileManager.default.createDirectory(
            atPath: URL(fileURLWithPath: log).deletingLastPathComponent().path,
            withIntermediateDirectories: true
        )
        if !FileManager.default.fileExists(atPath: log) {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
        }
        let handle = FileHandle(forWritingAtPath: log)
        handle?.seekToEndOfFile()
        process.standardError = handle
        if let standardOutput {
            _ = FileManager.default.createFile(atPath: standardOutput, contents: nil)
            process.standardOutput = FileHandle(forWritingAtPath: standardOutput)
        } else {
            process.standardOutput = FileHandle.nullDevice
        }
        try process.run()
        return process
    }

    private var workerProcessLogPath: String { processRoot + "-worker.log" }

    /// What the worker started by ``launchWorkerProcess(environment:)`` logged, for failure messages.
    public var workerProcessLog: String {
        (try? String(contentsOfFile: workerProcessLogPath, encoding: .utf8)) ?? "(no log)"
    }

    // MARK: Commands and replies

    /// Sends `provision` for `conversation`; returns the message id.
    @discardableResult
    public func provision(
        _ conversation: UUID,
        backend: RuntimeSettings.Backend? = nil,
        image: String? = nil,
        messageID: String = UUID().uuidString
    ) async throws -> String {
        try await bus.send(
            RuntimeCommand.provision.rawValue,
            ProvisionRequest(conversationID: conversation, backend: backend, image: image),
            to: topology.runtimeQueue,
            messageID: messageID
        )
        return messageID
    }

    /// Sends a lifecycle command for a sandbox.
    public func send(_ command: RuntimeCommand, sandbox: UUID) async throws {
        try await bus.send(command.rawValue, SandboxTarget(sandboxID: sandbox), to: topology.runtimeQueue)
    }

    /// A reply the workers sent to `conversation.commands`.
    public enum Reply: Sendable {
        case ready(SandboxReady)
        case failed(SandboxFailed)
        case other(String)

        public var ready: SandboxReady? {
            if case .ready(let ready) = self { return ready }
            return nil
        }

        public var failed: SandboxFailed? {
            if case .failed(let failed) = self { return failed }
            return nil
        }
    }

    /// Provisions a sandbox for `conversation` and returns its `sandbox_ready` (fails on `sandbox_failed`).
    public func provisioned(_ conversation: UUID) async throws -> SandboxReady {
        try await provision(conversation)
        let reply = try await reply(for: conversation)
        guard let ready = reply.ready else {
            throw DeckhandError(.protocolViolation, "expected sandbox_ready for \(conversation), got \(reply)")
        }
        return ready
    }

    /// The next reply for `conversation` (waiting at most `timeout`); resumes as soon as it arrives.
    public func reply(for conversation: UUID, timeout: Duration = .seconds(60)) async throws -> Reply {
        try Self.decode(try await replyDelivery(for: conversation, timeout: timeout))
    }

    /// ``reply(for:timeout:)`` as the message it came in, with its properties and headers.
    public func replyDelivery(for conversation: UUID, timeout: Duration = .seconds(60)) async throws -> AMQPDelivery {
        let delivery = try await withThrowingTaskGroup(of: AMQPDelivery?.self) { group in
            group.addTask { await self.inbox.next(conversation) }
            group.addTask {
                try await Task.sleep(for: timeout)
                self.inbox.abandon(conversation)
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
        guard let delivery else {
            throw DeckhandError(.timeout, "no sandbox_ready or sandbox_failed for \(conversation) within \(timeout)")
        }
        return delivery
    }

    /// Every reply received so far, per conversation.
    public func allReplies() throws -> [UUID: [Reply]] {
        try inbox.all().mapValues { try $0.map(Self.decode) }
    }

    static func decode(_ delivery: AMQPDelivery) throws -> Reply {
        switch delivery.properties.type {
        case ConversationCommand.sandboxReady.rawValue: return .ready(try delivery.message.decode(SandboxReady.self))
        case ConversationCommand.sandboxFailed.rawValue: return .failed(try delivery.message.decode(SandboxFailed.self))
        default: return .other(delivery.properties.type ?? "")
        }
    }

    // MARK: Sandboxes

    /// SIGKILLs the `deckhand-sandbox` server of the process sandbox in `folder` — as the OOM killer would —
    /// wherever it runs below the process its pid file names (bubblewrap's, when jailed); returns once it is
    /// gone. The jail ends with its server, so the sandbox is then `stopped`, its files kept.
    public static func killSandboxServer(folder: String) async throws {
        let recorded = try String(contentsOfFile: folder + "/pid", encoding: .utf8)
        guard let root = recorded.split(separator: " ").first.flatMap({ pid_t($0) }) else {
            throw DeckhandError(.protocolViolation, "no pid in \(folder)/pid: \(recorded)")
        }
        func stat(_ pid: pid_t) -> (comm: String, parent: pid_t)? {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")")
            else { return nil }
            let fields = text[text.index(after: close)...].split(separator: " ")
            guard fields.count > 1, let parent = pid_t(fields[1]) else { return nil }
            return (String(text[text.index(after: open)..<close]), parent)
        }
        let all = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
        var tree = [root]
        var index = 0
        while index < tree.count {
            let parent = tree[index]
            tree += all.filter { stat($0)?.parent == parent }
            index += 1
        }
        // `comm` holds the first 15 bytes of the name.
        let servers = tree.filter { stat($0)?.comm == "deckhand-sandbo" }
        guard !servers.isEmpty else { throw DeckhandError(.protocolViolation, "no deckhand-sandbox below pid \(root)") }
        for server in servers { kill(server, SIGKILL) }
        try await eventually("the sandbox server is gone") { servers.allSatisfy { kill($0, 0) != 0 } }
    }

    /// `POST /execute_action` with a `run` action on a ready sandbox; the observation's content.
    public func run(_ command: String, in sandbox: SandboxReady) async throws -> String {
        try await run(command, url: sandbox.url, key: sandbox.sessionAPIKey)
    }

    /// `POST /execute_action` with a `run` action on the sandbox server at `url` whose key is `key`.
    public func run(_ command: String, url: String, key: String) async throws -> String {
        var request = HTTPRequest(method: .post, url: url + "/execute_action")
        request.timeout = .seconds(30)
        request.headers.replaceOrAdd(name: "X-Session-API-Key", value: key)
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        let action: JSONValue = ["action": ["action": "run", "args": ["command": .string(command)]]]
        request.body = Array(try JSONEncoder().encode(action))
        let response = try await http.execute(request).expectSuccess()
        guard case .object(let observation) = try response.decode(JSONValue.self),
            let content = observation["content"]?.stringValue
        else { throw DeckhandError(.protocolViolation, "no observation content: \(response.text)") }
        return content
    }
}

/// What the workers sent to `conversation.commands`, by conversation, in arrival order, with at most one
/// waiter per conversation.
final class ReplyInbox: Sendable {
    private struct State {
        var pending: [UUID: [AMQPDelivery]] = [:]
        var seen: [UUID: [AMQPDelivery]] = [:]
        var waiters: [UUID: CheckedContinuation<AMQPDelivery?, Never>] = [:]
    }

    private let state = Mutex(State())

    func add(_ delivery: AMQPDelivery) {
        struct Header: Decodable {
            var conversation_id: UUID
        }
        guard let conversation = try? delivery.message.decode(Header.self).conversation_id else { return }
        let waiter = state.withLock { state -> CheckedContinuation<AMQPDelivery?, Never>? in
            state.seen[conversation, default: []].append(delivery)
            if let waiter = state.waiters.removeValue(forKey: conversation) { return waiter }
            state.pending[conversation, default: []].append(delivery)
            return nil
        }
        waiter?.resume(returning: delivery)
    }

    /// The next delivery for `conversation`; nil when abandoned.
    func next(_ conversation: UUID) async -> AMQPDelivery? {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> AMQPDelivery?? in
                if var queue = state.pending[conversation], !queue.isEmpty {
                    let first = queue.removeFirst()
                    state.pending[conversation] = queue
                    return .some(first)
                }
                state.waiters[conversation] = continuation
                return .none
            }
            if case .some(let delivery) = ready { continuation.resume(returning: delivery) }
        }
    }

    /// Ends a wait that timed out.
    func abandon(_ conversation: UUID) {
        state.withLock { $0.waiters.removeValue(forKey: conversation) }?.resume(returning: nil)
    }

    func all() -> [UUID: [AMQPDelivery]] { state.withLock { $0.seen } }
}

/// Runs `workers` (runtime or conversation workers) for the length of `body`, then cancels them.
public func running<T: Sendable>(_ workers: any Service..., body: () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in workers {
            group.addTask { try await worker.run() }
        }
        let result: Result<T, any Error>
        do {
            result = .success(try await body())
        } catch {
            result = .failure(error)
        }
        group.cancelAll()
        try? await group.waitForAll()
        return try result.get()
    }
}
