import DeckhandCore
import Foundation

extension DeckhandError.Code {
    /// The sandbox image does not exist where the backend looks for it.
    public static let runtimeImageMissing: Self = "RUNTIME$IMAGE_MISSING"
    /// The backend refused or failed an operation on a sandbox.
    public static let runtimeBackend: Self = "RUNTIME$BACKEND"
    /// The sandbox started but its server did not answer `/alive` in time.
    public static let runtimeNotAlive: Self = "RUNTIME$NOT_ALIVE"
    /// The sandbox is gone from its backend.
    public static let runtimeLost: Self = "RUNTIME$LOST"
    /// The backend cannot run the image as given (process sandboxes run only Deckhand's server).
    public static let runtimeImageUnsupported: Self = "RUNTIME$IMAGE_UNSUPPORTED"
}

/// The line `deckhand-sandbox --announce-port` prints once listening: how a backend learns the port the
/// kernel picked (from a container's log, or a process sandbox's).
public enum PortAnnouncement {
    static let prefix = "deckhand-sandbox port "

    /// The ports announced in `output`, oldest first (one per start).
    public static func ports<S: StringProtocol>(in output: S) -> [Int] {
        output.split(separator: "\n").compactMap { line in
            line.hasPrefix(prefix) ? Int(line.dropFirst(prefix.count)) : nil
        }
    }
}

/// What a backend needs to create and start one sandbox.
public struct SandboxSpec: Sendable {
    /// Deckhand's id of the sandbox (its `deckhand.sandbox` label).
    public var id: UUID
    /// The Docker image; `deckhand-sandbox` for process sandboxes.
    public var image: String
    /// The key the sandbox server demands (`SESSION_API_KEY`). A secret: never logged.
    public var sessionAPIKey: String
    /// Extra variables for the sandbox (may hold secrets: never logged).
    public var environment: [String: String]
    /// How many times the backend's resource limits the sandbox gets (a Runtime API's `resource_factor`).
    public var resourceFactor: Int
    /// Run the image as given, with its own server (nil: Deckhand's sandbox server). Backends that run only
    /// Deckhand's server refuse it with `RUNTIME$IMAGE_UNSUPPORTED`.
    public var launch: SandboxLaunch?

    public init(
        id: UUID,
        image: String,
        sessionAPIKey: String,
        environment: [String: String] = [:],
        resourceFactor: Int = 1,
        launch: SandboxLaunch? = nil
    ) {
        self.id = id
        self.image = image
        self.sessionAPIKey = sessionAPIKey
        self.environment = environment
        self.resourceFactor = max(1, resourceFactor)
        self.launch = launch
    }
}

/// A backend's own view of one sandbox.
public enum SandboxBackendState: String, Sendable, Equatable {
    /// Created, not started yet.
    case created
    case running
    case paused
    /// Not running; its files are kept and it can be started again.
    case stopped
    /// The backend does not know it.
    case missing
}

/// A started sandbox: where its server answers and, when the backend chose it (a Runtime API does), the key it
/// demands (nil: the spec's).
public struct StartedSandbox: Sendable, Equatable {
    public var url: String
    public var sessionAPIKey: String?

    public init(url: String, sessionAPIKey: String? = nil) {
        self.url = url
        self.sessionAPIKey = sessionAPIKey
    }
}

/// A sandbox the backend reports (listing by Deckhand's labels).
public struct ListedSandbox: Sendable, Equatable {
    public var sandboxID: UUID
    public var reference: String
    public var state: SandboxBackendState

    public init(sandboxID: UUID, reference: String, state: SandboxBackendState) {
        self.sandboxID = sandboxID
        self.reference = reference
        self.state = state
    }
}

/// One way of running sandboxes (DESIGN §7). `reference` is the backend's own name for a sandbox (a container
/// id, a folder); every operation is idempotent on a sandbox already in the asked state.
public protocol SandboxBackend: Sendable {
    var kind: RuntimeSettings.Backend { get }

    /// Creates the sandbox without starting it; returns its reference.
    func create(_ spec: SandboxSpec) async throws -> String
    /// Starts a created or stopped sandbox: the URL its server will answer at (and its key, when the backend
    /// chose it).
    func start(_ reference: String, spec: SandboxSpec) async throws -> StartedSandbox
    func stop(_ reference: String) async throws
    func pause(_ reference: String) async throws
    func resume(_ reference: String) async throws
    /// Removes the sandbox and its files; a missing one is not an error.
    func destroy(_ reference: String) async throws
    func inspect(_ reference: String) async throws -> SandboxBackendState
    /// Every sandbox of this backend that carries Deckhand's labels.
    func list() async throws -> [ListedSandbox]
}
