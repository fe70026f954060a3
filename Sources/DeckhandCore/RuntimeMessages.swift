import Foundation

/// The commands runtime-manager workers take from `runtime.commands` (the AMQP `type` property).
public enum RuntimeCommand: String, Sendable, CaseIterable {
    /// Give a conversation a running sandbox: `ProvisionRequest`.
    case provision
    case pause
    case resume
    case stop
    case destroy
    /// Start warm sandboxes until the pool targets are met (no body needed).
    case poolRefill = "pool.refill"
}

/// `provision`: a sandbox for `conversation_id`, of the worker's default backend and image unless named.
public struct ProvisionRequest: Codable, Sendable, Equatable {
    public var conversationID: UUID
    public var backend: RuntimeSettings.Backend?
    public var image: String?
    /// Variables for a sandbox made for this request, beside `runtime.environment` (a Runtime API caller's).
    /// May hold secrets: never logged. A request with some is not served from the warm pool.
    public var environment: [String: String]?
    /// How many times the backend's limits a sandbox made for this request gets (a Runtime API's
    /// `resource_factor`); above 1 it is not served from the warm pool.
    public var resourceFactor: Int?
    /// Run `image` as given, with its own command, rather than Deckhand's sandbox server (a Runtime API caller's
    /// image that `runtime_api.image_map` does not give to Deckhand's sandbox image). Never from the warm pool.
    public var launch: SandboxLaunch?

    public init(
        conversationID: UUID,
        backend: RuntimeSettings.Backend? = nil,
        image: String? = nil,
        environment: [String: String]? = nil,
        resourceFactor: Int? = nil,
        launch: SandboxLaunch? = nil
    ) {
        self.conversationID = conversationID
        self.backend = backend
        self.image = image
        self.environment = environment
        self.resourceFactor = resourceFactor
        self.launch = launch
    }

    /// Whether a warm sandbox (made with the worker's settings only) will do.
    public var fitsWarmPool: Bool { (environment ?? [:]).isEmpty && (resourceFactor ?? 1) <= 1 && launch == nil }

    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
        case backend, image, environment, launch
        case resourceFactor = "resource_factor"
    }
}

/// How an image that is not Deckhand's sandbox image is run "as given": its own server, started by `command`
/// (the image's own entrypoint when empty) in `working_dir`, answers OpenHands' action-execution protocol on
/// `port` and demands the key in its `SESSION_API_KEY` (as OpenHands' runtime images do).
public struct SandboxLaunch: Codable, Sendable, Equatable {
    public var command: [String]
    public var workingDir: String?
    public var port: Int

    public init(command: [String], workingDir: String? = nil, port: Int) {
        self.command = command
        self.workingDir = workingDir
        self.port = port
    }

    enum CodingKeys: String, CodingKey {
        case command
        case workingDir = "working_dir"
        case port
    }
}

/// `pause`, `resume`, `stop`, `destroy`: the sandbox named by its id, or the one of a conversation.
public struct SandboxTarget: Codable, Sendable, Equatable {
    public var sandboxID: UUID?
    public var conversationID: UUID?

    public init(sandboxID: UUID? = nil, conversationID: UUID? = nil) {
        self.sandboxID = sandboxID
        self.conversationID = conversationID
    }

    enum CodingKeys: String, CodingKey {
        case sandboxID = "sandbox_id"
        case conversationID = "conversation_id"
    }
}

/// `sandbox_ready`: where the conversation's sandbox answers and the key it wants.
public struct SandboxReady: Codable, Sendable, Equatable {
    public var conversationID: UUID
    public var sandboxID: UUID
    public var url: String
    /// The sandbox's `X-Session-API-Key`. A secret: never logged, never in an event.
    public var sessionAPIKey: String
    public var backend: RuntimeSettings.Backend
    public var image: String

    public init(
        conversationID: UUID,
        sandboxID: UUID,
        url: String,
        sessionAPIKey: String,
        backend: RuntimeSettings.Backend,
        image: String
    ) {
        self.conversationID = conversationID
        self.sandboxID = sandboxID
        self.url = url
        self.sessionAPIKey = sessionAPIKey
        self.backend = backend
        self.image = image
    }

    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
        case sandboxID = "sandbox_id"
        case url
        case sessionAPIKey = "session_api_key"
        case backend, image
    }
}

/// `sandbox_failed`: the conversation gets no sandbox, and why (readable; no secret).
public struct SandboxFailed: Codable, Sendable, Equatable {
    public var conversationID: UUID
    public var sandboxID: UUID?
    /// A stable error code (`RUNTIME$IMAGE_MISSING`, `SERVICE$UNAVAILABLE`, …).
    public var code: String
    public var reason: String

    public init(conversationID: UUID, sandboxID: UUID?, code: String, reason: String) {
        self.conversationID = conversationID
        self.sandboxID = sandboxID
        self.code = code
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
        case sandboxID = "sandbox_id"
        case code, reason
    }
}

/// A sandbox's status change, published on `deckhand.events` as `sandbox.<id>` (type `sandbox_status`).
public struct SandboxStatusEvent: Codable, Sendable, Equatable {
    public var sandboxID: UUID
    public var conversationID: UUID?
    /// `starting`, `warm`, `running`, `paused`, `stopped`, `destroyed`, `error` or `lost`.
    public var status: String
    public var backend: RuntimeSettings.Backend
    public var reason: String?
    /// ISO 8601, UTC.
    public var timestamp: String

    public init(
        sandboxID: UUID,
        conversationID: UUID?,
        status: String,
        backend: RuntimeSettings.Backend,
        reason: String? = nil,
        timestamp: Date = Date()
    ) {
        let timestamp = timestamp.ISO8601Format()
        self.sandboxID = sandboxID
        self.conversationID = conversationID
        self.status = status
        self.backend = backend
        self.reason = reason
        self.timestamp = timestamp
    }

    enum CodingKeys: String, CodingKey {
        case sandboxID = "sandbox_id"
        case conversationID = "conversation_id"
        case status, backend, reason, timestamp
    }
}

extension DeckhandError.Code {
    /// `deckhand runtime-api`: the sandbox of a `/start` failed to start (a 502 that trying again does not
    /// change; the `remote` backend takes it as final).
    public static let runtimeStartFailed: Self = "RUNTIME$START_FAILED"
}
