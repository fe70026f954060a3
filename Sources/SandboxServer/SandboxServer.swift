import DeckhandCore
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The server that runs inside a sandbox and speaks OpenHands' action-execution protocol (PROTOCOL.md §C).
///
/// It listens at once and answers `/alive` with `not initialized` until its workspace is ready, then `ok`.
public struct SandboxServer: Sendable {
    public let configuration: SandboxConfiguration
    let logger: Logger

    public init(configuration: SandboxConfiguration, logger: Logger = Logger(label: "deckhand.sandbox")) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Serves until a shutdown signal (SIGTERM, SIGINT) or cancellation; `onRunning` gets the bound port.
    public func run(
        shutdownSignals: [UnixSignal] = [.sigterm, .sigint],
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) async throws {
        let state = SandboxState(configuration: configuration, logger: logger)
        let app = Application(
            router: makeRouter(state: state),
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port),
                serverName: "deckhand-sandbox"
            ),
            onServerRunning: { channel in
                await onRunning(channel.localAddress?.port ?? configuration.port)
            },
            logger: logger
        )
        let services: [any Service] = [app, state]
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: shutdownSignals, logger: logger)
        )
        try await group.run()
    }

    func makeRouter(state: SandboxState) -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: SessionKeyMiddleware(key: configuration.sessionAPIKey, activity: state.activity))
        router.get("alive") { _, _ in
            SandboxHTTP.json(["status": state.isReady ? "ok" : "not initialized"])
        }
        router.get("server_info") { _, _ in
            SandboxHTTP.json(state.serverInfo.snapshot(lastActivity: state.activity.lastActivity))
        }
        return router
    }
}

/// Everything the routes share; prepares the workspace as a service so `/alive` can answer before it is ready.
final class SandboxState: Service, Sendable {
    let configuration: SandboxConfiguration
    let logger: Logger
    let activity = ActivityClock()
    let serverInfo: ServerInfo
    private let ready = Atomic<Bool>(false)

    init(configuration: SandboxConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.serverInfo = ServerInfo(workingDirectory: configuration.workingDirectory)
    }

    var isReady: Bool { ready.load(ordering: .acquiring) }

    func run() async throws {
        ready.store(true, ordering: .releasing)
        try? await gracefulShutdown()
    }
}
