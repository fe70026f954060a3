import DeckhandCore
import Foundation
import GRPC
import HTTPClient
import Logging
import Modal

/// Sandboxes on Modal (../shared/MODAL.md): Deckhand's sandbox image, pulled by Modal from the registry the
/// operator pushed it to, runs `deckhand-sandbox` behind an encrypted tunnel to its port.
///
/// `create` gets (or makes) the app, the image (waiting for Modal's build of it) and an ephemeral secret holding
/// the sandbox's environment and session key, then `SandboxCreate` with the tags `deckhand.deployment` and
/// `deckhand.sandbox` (how `list` finds this deployment's sandboxes); the reference is Modal's sandbox id.
/// `start` waits for the sandbox's task and its tunnel; the URL is the tunnel's.
///
/// Modal has no pause and no stop that keeps files: a paused sandbox keeps running (so waking it is instant;
/// the idle rules stop it later), and `stop` terminates it, so its workspace is gone and the sandbox counts as
/// missing afterwards (the conversation is told, as for a lost one).
public struct ModalBackend: SandboxBackend {
    public let settings: ModalSettings
    public let deployment: String
    let client: ModalClient
    let cache: ModalObjects
    let logger: Logger

    /// The sandbox server's port inside the sandbox (the tunnel's target).
    public static let port: UInt32 = 8000
    /// The tags every sandbox of a deployment carries.
    static let deploymentTag = "deckhand.deployment"
    static let sandboxTag = "deckhand.sandbox"

    public var kind: RuntimeSettings.Backend { .modal }

    public init(settings: ModalSettings, deployment: String, http: HTTPClient, logger: Logger) {
        self.settings = settings
        self.deployment = deployment
        self.client = ModalClient(
            server: settings.serverURL,
            credentials: .init(tokenID: settings.tokenID, tokenSecret: settings.tokenSecret),
            clientVersion: settings.clientVersion,
            deadline: settings.requestTimeout,
            retryFor: settings.retryFor,
            http: http,
            logger: logger
        )
        self.cache = ModalObjects()
        self.logger = logger
    }

    // MARK: SandboxBackend

    public func create(_ spec: SandboxSpec) async throws -> String {
        try await modal("create the sandbox") {
            let app = try await appID()
            let image = try await imageID(spec.launch == nil ? (settings.image ?? spec.image) : spec.image, app: app)
            var secret = SecretGetOrCreateRequest()
            secret.environmentName = settings.environment
            secret.objectCreationType = .ephemeral
            secret.environment = spec.environment.merging(["SESSION_API_KEY": spec.sessionAPIKey]) { $1 }
            let secretID = try await client.call("SecretGetOrCreate", secret, as: SecretGetOrCreateResponse.self)
                .secretID

            var request = SandboxCreateRequest()
            request.appID = app
            request.definition = definition(spec, image: image, secret: secretID)
            request.tags = [
                SandboxTag(Self.deploymentTag, deployment),
                SandboxTag(Self.sandboxTag, spec.id.uuidString.lowercased()),
            ]
            let created = try await client.call("SandboxCreate", request, as: SandboxCreateResponse.self)
            logger.info("Modal sandbox created", metadata: ["modal.sandbox": "\(created.sandboxID)"])
            return created.sandboxID
        }
    }

    /// What the sandbox runs: Deckhand's sandbox server on ``port`` (or, for an image run as given, the
    /// caller's command and port), with the limits scaled by the sandbox's resource factor.
    func definition(_ spec: SandboxSpec, image: String, secret: String) -> SandboxDefinition {
        var definition = SandboxDefinition()
        if let launch = spec.launch {
            definition.entrypointArgs = launch.command
            definition.workdir = launch.workingDir
            definition.openPorts = [PortSpec(port: UInt32(launch.port))]
        } else {
            definition.entrypointArgs = [
                "/usr/local/bin/deckhand-sandbox", "--host", "0.0.0.0", "--port", String(Self.port), "--working-dir",
                "/workspace",
            ]
            definition.workdir = "/workspace"
            definition.openPorts = [PortSpec(port: Self.port)]
        }
        definition.imageID = image
        definition.secretIDs = [secret]
        let factor = Double(max(1, spec.resourceFactor))
        definition.milliCPU = UInt32(settings.cpu * 1000 * factor)
        definition.milliCPUMax = definition.milliCPU * 2
        definition.memoryMB = UInt32(Double(settings.memoryMB) * factor)
        definition.memoryMBMax = definition.memoryMB
        definition.timeoutSeconds = UInt32(settings.timeout.components.seconds)
        return definition
    }

    /// Waits for the sandbox's task and then its tunnel (`modal.start_timeout`); a sandbox that ended is an error
    /// that says how, one that Modal does not know is lost.
    public func start(_ reference: String, spec: SandboxSpec) async throws -> StartedSandbox {
        let deadline = ContinuousClock.now + settings.startTimeout
        let port = spec.launch.map { UInt32($0.port) } ?? Self.port
        return try await modal("start the sandbox") {
            while true {
                let task = try await client.call(
                    "SandboxGetTaskId",
                    SandboxRequest(reference, timeout: Self.poll(until: deadline, atMost: 55)),
                    as: SandboxGetTaskIDResponse.self
                )
                if let result = task.taskResult { throw ended(reference, result) }
                if task.taskID != nil { break }
                guard ContinuousClock.now < deadline else { throw notStarted(reference, "was not scheduled") }
            }
            while true {
                let tunnels: SandboxGetTunnelsResponse
                do {
                    tunnels = try await client.call(
                        "SandboxGetTunnels",
                        SandboxRequest(reference, timeout: Self.poll(until: deadline, atMost: 50)),
                        as: SandboxGetTunnelsResponse.self
                    )
                } catch let status as GRPCStatus where status.code == .failedPrecondition {
                    // The sandbox ended before its tunnel opened: say how.
                    let wait = try await client.call(
                        "SandboxWait",
                        SandboxRequest(reference),
                        as: SandboxResultResponse.self
                    )
                    if let result = wait.result { throw ended(reference, result) }
                    throw status
                }
                if let tunnel = tunnels.tunnels.first(where: { $0.containerPort == port }) {
                    return StartedSandbox(url: settings.tunnelTLS ? tunnel.url : "http://\(tunnel.host):\(tunnel.port)")
                }
                guard ContinuousClock.now < deadline else {
                    throw notStarted(reference, "opened no tunnel to port \(port)")
                }
            }
        }
    }

    /// A long poll's timeout: what is left before `deadline`, at most `limit` seconds, at least a tenth of one.
    static func poll(until deadline: ContinuousClock.Instant, atMost limit: Float) -> Float {
        let left = Float((deadline - .now).seconds)
        return max(0.1, min(limit, left))
    }

    func ended(_ reference: String, _ result: GenericResult) -> DeckhandError {
        DeckhandError(
            .runtimeNotAlive,
            "the Modal sandbox \(reference) ended while starting (\(Self.describe(result)))"
        )
    }

    func notStarted(_ reference: String, _ what: String) -> DeckhandError {
        DeckhandError(
            .runtimeNotAlive,
            "the Modal sandbox \(reference) \(what) within \(settings.startTimeout) (modal.start_timeout)"
        )
    }

    static func describe(_ result: GenericResult) -> String {
        var text = "status \(result.status), exit code \(result.exitCode)"
        if !result.exception.isEmpty { text += ": \(result.exception.prefix(300))" }
        return text
    }

    /// Modal cannot stop a sandbox and keep its files: stopping ends it.
    public func stop(_ reference: String) async throws {
        try await terminate(reference)
    }

    /// Modal has no pause: the sandbox keeps running (and answering) until the idle rules stop it.
    public func pause(_ reference: String) async throws {
        logger.debug("Modal has no pause: the sandbox keeps running", metadata: ["modal.sandbox": "\(reference)"])
    }

    public func resume(_ reference: String) async throws {}

    public func destroy(_ reference: String) async throws {
        try await terminate(reference)
    }

    func terminate(_ reference: String) async throws {
        do {
            _ = try await modal("terminate the sandbox") {
                try await client.call("SandboxTerminate", SandboxRequest(reference), as: SandboxResultResponse.self)
            }
        } catch let error as DeckhandError where error.code == Self.notFound {
            return
        }
    }

    /// Running while Modal has no result for it; an ended or unknown sandbox is missing (its files are gone).
    public func inspect(_ reference: String) async throws -> SandboxBackendState {
        do {
            let wait = try await modal("inspect the sandbox") {
                try await client.call("SandboxWait", SandboxRequest(reference), as: SandboxResultResponse.self)
            }
            return wait.result == nil ? .running : .missing
        } catch let error as DeckhandError where error.code == Self.notFound {
            return .missing
        }
    }

    /// The running sandboxes of this deployment (by its tag), newest first, page by page.
    public func list() async throws -> [ListedSandbox] {
        try await modal("list the sandboxes") {
            var request = SandboxListRequest()
            request.appID = try await appID()
            request.environmentName = settings.environment
            request.tags = [SandboxTag(Self.deploymentTag, deployment)]
            var listed: [ListedSandbox] = []
            var seen: Set<String> = []
            while true {
                let page = try await client.call("SandboxList", request, as: SandboxListResponse.self).sandboxes
                let fresh = page.filter { seen.insert($0.id).inserted }
                guard !fresh.isEmpty else { return listed }
                for info in fresh where info.taskResult == nil {
                    guard let tag = info.tags.first(where: { $0.name == Self.sandboxTag }),
                        let id = UUID(uuidString: tag.value)
                    else { continue }
                    listed.append(ListedSandbox(sandboxID: id, reference: info.id, state: .running))
                }
                request.beforeTimestamp = fresh.map(\.createdAt).min() ?? 0
            }
        }
    }

    // MARK: Apps and images

    func appID() async throws -> String {
        if let app = await cache.app { return app }
        var request = AppGetOrCreateRequest()
        request.appName = settings.app
        request.environmentName = settings.environment
        request.objectCreationType = .createIfMissing
        let app = try await client.call("AppGetOrCreate", request, as: AppGetOrCreateResponse.self).appID
        await cache.setApp(app)
        return app
    }

    /// The image of a registry reference, built by Modal once (`FROM <reference>`) and then kept.
    func imageID(_ reference: String, app: String) async throws -> String {
        if let image = await cache.images[reference] { return image }
        if await cache.builderVersion == nil {
            var environment = EnvironmentGetOrCreateRequest()
            environment.deploymentName = settings.environment
            let answer = try await client.call(
                "EnvironmentGetOrCreate",
                environment,
                as: EnvironmentGetOrCreateResponse.self
            )
            await cache.setBuilderVersion(answer.imageBuilderVersion)
        }
        var request = ImageGetOrCreateRequest()
        request.dockerfileCommands = ["FROM \(reference)"]
        request.appID = app
        request.builderVersion = await cache.builderVersion ?? ""
        let answer = try await client.call("ImageGetOrCreate", request, as: ImageGetOrCreateResponse.self)
        var result = answer.result ?? GenericResult()
        if answer.result == nil { result = try await joinBuild(answer.imageID) }
        guard result.status == .success else {
            throw DeckhandError(
                .runtimeImageMissing,
                "Modal could not make an image of \(reference) (\(Self.describe(result))): push Deckhand's sandbox image there and set modal.image"
            )
        }
        await cache.setImage(answer.imageID, for: reference)
        return answer.imageID
    }

    /// Follows Modal's build of an image to its result (long polls of 55 s, each from the last entry seen).
    func joinBuild(_ image: String) async throws -> GenericResult {
        let deadline = ContinuousClock.now + settings.startTimeout
        var lastEntry = ""
        while ContinuousClock.now < deadline {
            var request = ImageJoinStreamingRequest()
            request.imageID = image
            request.timeout = 55
            request.lastEntryID = lastEntry
            do {
                for try await message in client.stream(
                    "ImageJoinStreaming",
                    request,
                    as: ImageJoinStreamingResponse.self,
                    deadline: .seconds(70)
                ) {
                    if !message.entryID.isEmpty { lastEntry = message.entryID }
                    if let result = message.result, result.status != .unspecified { return result }
                }
            } catch let status as GRPCStatus where status.isTransient {
                logger.debug(
                    "the image build's stream was cut; joining it again",
                    metadata: ["grpc.status": "\(status)"]
                )
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        throw DeckhandError(
            .runtimeNotAlive,
            "Modal did not finish building image \(image) within \(settings.startTimeout)"
        )
    }

    // MARK: Errors

    static let notFound = DeckhandError.Code("GRPC$" + GRPCStatus.Code.notFound.name)

    /// Runs calls to Modal, turning a gRPC status into Deckhand's vocabulary: a transient one is an outage
    /// (`SERVICE$UNAVAILABLE`, the runtime command is tried again later), a refused token names the settings.
    func modal<T>(_ operation: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let status as GRPCStatus {
            if status.code == .unauthenticated || status.code == .permissionDenied {
                throw DeckhandError(
                    .runtimeModal,
                    "Modal refused the token (\(status.code.name): \(status.message)) trying to \(operation): check modal.token_id and modal.token_secret",
                    underlying: status
                )
            }
            throw status.deckhandError(calling: "Modal, trying to \(operation),")
        }
    }
}

/// What a backend learns once and keeps: the app's id, the image builder version and the images made.
actor ModalObjects {
    var app: String?
    var builderVersion: String?
    var images: [String: String] = [:]

    func setApp(_ id: String) { app = id }
    func setBuilderVersion(_ version: String) { builderVersion = version }
    func setImage(_ id: String, for reference: String) { images[reference] = id }
}

extension DeckhandError.Code {
    /// Modal refused the `modal` backend's token (a setting to fix, not an outage).
    public static let runtimeModal: Self = "RUNTIME$MODAL"
}
