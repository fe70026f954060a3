import DeckhandCore
import Foundation
import HTTPClient
import HTTPTypes
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
        router.post("execute_action") { request, _ -> Response in
            guard let executor = state.executor else {
                return SandboxHTTP.detail("the sandbox is not initialized yet", status: .serviceUnavailable)
            }
            let actionID = request.headers[HTTPField.Name(ActionJournal.header)!]
            if let actionID, actionID.isEmpty || actionID.count > ActionJournal.maximumIDLength {
                return SandboxHTTP.detail(
                    "\(ActionJournal.header) must be 1 to \(ActionJournal.maximumIDLength) characters",
                    status: .badRequest
                )
            }
            let body = Array(buffer: try await request.body.collect(upTo: 64 << 20))
            let started = ContinuousClock.now
            let answer = await state.journal.answer(id: actionID) { await executor.execute(body: body) }
            // One line per action, in the trace of the step that sent it (its `traceparent`).
            var metadata: Logger.Metadata = [
                "sandbox.action.status": "\(answer.status)",
                LogKey.durationMilliseconds.rawValue: "\((ContinuousClock.now - started).wholeMilliseconds)",
            ]
            if let traceparent = request.headers[HTTPField.Name("traceparent")!],
                let trace = Traceparent.traceID(of: traceparent)
            {
                metadata[LogKey.traceID.rawValue] = "\(trace)"
            }
            if let actionID { metadata["sandbox.action.id"] = "\(actionID)" }
            logger.info("action answered", metadata: metadata)
            return SandboxHTTP.json(answer.body, status: .init(code: answer.status))
        }
        router.post("list_files") { request, _ -> Response in
            guard let files = state.files else {
                return SandboxHTTP.detail("the sandbox is not initialized yet", status: .serviceUnavailable)
            }
            let body = try await request.body.collect(upTo: 1 << 20)
            var path: String?
            if body.readableBytes > 0 {
                guard let json = try? JSONDecoder().decode(JSONValue.self, from: Data(Array(buffer: body))),
                    case .object = json
                else {
                    return SandboxHTTP.detail(
                        "the body must be a JSON object such as {\"path\": \"/workspace\"}",
                        status: .badRequest
                    )
                }
                path = json["path"]?.stringValue
            }
            do {
                return SandboxHTTP.json(.array(try await files.listFiles(path: path).map { .string($0) }))
            } catch let error as DeckhandError where error.code == .fileNotFound {
                return SandboxHTTP.json([])
            }
        }
        router.post("upload_file") { request, _ -> Response in
            try await Uploads.receive(request, state: state)
        }
        router.get("download_files") { request, _ -> Response in
            try await Uploads.download(request, state: state)
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
    /// The observations of the actions run, by the caller's action id: a repeated request runs nothing twice.
    let journal = ActionJournal()
    private let parts = Mutex<Parts?>(nil)

    private struct Parts {
        var executor: ActionExecutor
        var http: LazyHTTPClient
    }

    /// `path` as an absolute path: a relative one (or an empty one) is inside the workspace.
    func inWorkspace(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        return path.isEmpty
            ? configuration.workingDirectory
            : (configuration.workingDirectory as NSString).appendingPathComponent(path)
    }

    init(configuration: SandboxConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.serverInfo = ServerInfo(workingDirectory: configuration.workingDirectory)
    }

    /// Ready once the shell runs in the workspace.
    var isReady: Bool { parts.withLock { $0 != nil } }
    var executor: ActionExecutor? { parts.withLock { $0?.executor } }
    var files: FileTools? { executor?.files }

    /// Starts the shell, serves until shutdown, then ends the shell and everything it started.
    func run() async throws {
        let shell = try await BashSession.start(
            workingDirectory: configuration.workingDirectory,
            username: configuration.username,
            uid: configuration.uid,
            noChangeTimeout: configuration.noChangeTimeout
        )
        let http = LazyHTTPClient(logger: logger)
        let executor = ActionExecutor(
            shell: shell,
            files: FileTools(workingDirectory: configuration.workingDirectory),
            browser: Browser(client: http)
        )
        parts.withLock { $0 = Parts(executor: executor, http: http) }
        logger.info("sandbox ready", metadata: [LogKey.workspace.rawValue: "\(configuration.workingDirectory)"])
        try? await gracefulShutdown()
        parts.withLock { $0 = nil }
        await shell.close()
        await http.shutdown()
    }
}
