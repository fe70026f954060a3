import DeckhandCore
import Foundation
import HTTPClient
import Logging

/// Sandboxes as Docker containers, driven through the Docker Engine API (v1.41) over its unix socket.
///
/// Each container runs the image's `deckhand-sandbox`, carries the labels `deckhand.sandbox=<id>` and
/// `deckhand.managed=true`, has memory, CPU and process limits, is never privileged and gets no Docker socket.
/// Its root file system is read-only: the workspace is a volume of its own (removed with the container), `/tmp`,
/// the home and `/run` are small memory-backed file systems. The server starts as root with only the
/// capabilities it needs to drop to the image's unprivileged user (`docker.user`), reads its key from its
/// environment, and becomes that user, non-dumpable, before the agent's shell starts: the shell cannot read the
/// key (the container's init, which has it in its environment, is root's) and no process of the agent holds a
/// capability or can gain one (`no-new-privileges`). Its server is reached on a port Docker publishes on the
/// node's advertised address (`node.advertise_host`, 127.0.0.1 on one machine) from a bridge network of Deckhand's own (`docker.bridge_network`: the host's loopback services are
/// out of reach), or, on the host's network, at a port the kernel picks when the server binds port 0 (so no two
/// sandboxes, of any worker, ever share one); the server announces it on its standard output, which the
/// backend reads back from the container's log.
public struct DockerBackend: SandboxBackend {
    public let socket: String
    public let settings: DockerSettings
    /// The `deckhand.deployment` label: the containers this deployment manages (others sharing the engine
    /// are never touched).
    public let deployment: String
    /// The address sandbox servers are published on (bridge) or listen on (host network), and their URLs name.
    public let advertiseHost: String
    let client: HTTPClient
    let logger: Logger

    /// The port the sandbox server listens on inside a bridge-networked container.
    static let containerPort = 8000
    /// The capabilities a sandbox's root processes keep: switching to the unprivileged user (the server, once)
    /// and signalling it (the container's init forwards `docker stop`). The agent's processes have none.
    static let capabilities = ["KILL", "SETGID", "SETUID"]
    /// Without an unprivileged user (`docker.user` empty) the shell is root's, and keeps what a root shell
    /// that installs packages needs.
    static let rootCapabilities = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"]

    public init(
        socket: String,
        settings: DockerSettings,
        deployment: String,
        advertiseHost: String = "127.0.0.1",
        client: HTTPClient,
        logger: Logger
    ) {
        self.socket = socket
        self.settings = settings
        self.deployment = deployment
        self.advertiseHost = advertiseHost
        self.client = client
        self.logger = logger
    }

    public var kind: RuntimeSettings.Backend { .docker }

    // MARK: The Engine API

    private func call(
        _ method: HTTPRequest.Method,
        _ path: String,
        body: JSONValue? = nil,
        timeout: Duration = .seconds(60)
    ) async throws -> HTTPResponse {
        var request = HTTPRequest(method: method, url: "http://localhost/v1.41" + path, unixSocketPath: socket)
        request.timeout = timeout
        request.connectTimeout = .seconds(5)
        if let body {
            request.body = Array(try JSONEncoder().encode(body))
            request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        }
        do {
            return try await client.execute(request)
        } catch let error as DeckhandError where error.code.rawValue.hasPrefix("HTTP$") {
            throw DeckhandError(
                .unavailable,
                "the Docker engine at \(socket) does not answer (\(error.message))",
                underlying: error
            )
        }
    }

    /// The engine's `message` from an error answer.
    private static func message(of response: HTTPResponse) -> String {
        if case .object(let object) = try? response.decode(JSONValue.self), let message = object["message"]?.stringValue
        {
            return message
        }
        return response.text.isEmpty ? "HTTP \(response.status)" : response.text
    }

    private func fail(_ operation: String, _ response: HTTPResponse) -> DeckhandError {
        DeckhandError(
            .runtimeBackend,
            "Docker could not \(operation): \(Self.message(of: response)) (HTTP \(response.status))"
        )
    }

    /// The engine's version and API version (`GET /version`): what `deckhand check` reports.
    public func engineVersion() async throws -> (engine: String, api: String) {
        struct Version: Decodable {
            var Version: String
            var ApiVersion: String
        }
        let response = try await call(.get, "/version", timeout: .seconds(10))
        guard response.status == 200 else { throw fail("tell its version", response) }
        let version = try response.decode(Version.self)
        return (version.Version, version.ApiVersion)
    }

    // MARK: SandboxBackend

    public func create(_ spec: SandboxSpec) async throws -> String {
        var environment = spec.environment
        environment["SESSION_API_KEY"] = spec.sessionAPIKey
        if let launch = spec.launch {
            return try await create(spec, asGiven: launch, environment: environment)
        }
        let unprivileged = !settings.user.isEmpty
        let tmp = "rw,nosuid,nodev,size=\(settings.tmpBytes)"
        var hostConfig: [String: JSONValue] = [
            "Privileged": false,
            "CapDrop": ["ALL"],
            "CapAdd": .array((unprivileged ? Self.capabilities : Self.rootCapabilities).map { .string($0) }),
            "SecurityOpt": ["no-new-privileges"],
            "Init": true,
        ]
        if unprivileged {
            hostConfig["ReadonlyRootfs"] = true
            hostConfig["Tmpfs"] = [
                "/tmp": .string(tmp + ",mode=1777"),
                "/home/\(settings.user)": .string(tmp + ",mode=0700,uid=\(Self.sandboxUID),gid=\(Self.sandboxUID)"),
                "/run": "rw,nosuid,nodev,size=16m,mode=0755",
            ]
        }
        addLimits(to: &hostConfig, factor: spec.resourceFactor)
        var exposed: JSONValue = [:]
        switch settings.network {
        case .host:
            hostConfig["NetworkMode"] = "host"
        case .bridge:
            try await ensureNetwork()
            hostConfig["NetworkMode"] = .string(settings.bridgeNetwork)
            hostConfig["PortBindings"] = [
                "\(Self.containerPort)/tcp": [["HostIp": .string(advertiseHost), "HostPort": ""]]
            ]
            exposed = ["\(Self.containerPort)/tcp": [:]]
        }
        let (host, port) = settings.network == .host ? (advertiseHost, 0) : ("0.0.0.0", Self.containerPort)
        var command: [JSONValue] = [
            "--host", .string(host), "--port", .string(String(port)), "--working-dir", "/workspace",
            "--announce-port",
        ]
        if unprivileged { command += ["--run-as", .string(settings.user)] }
        let body: JSONValue = [
            "Image": .string(spec.image),
            "Cmd": .array(command),
            // The workspace outlives the container's runs on a volume of its own (the root is read-only).
            "Volumes": ["/workspace": [:]],
            "Env": .array(environment.sorted { $0.key < $1.key }.map { .string("\($0.key)=\($0.value)") }),
            "Labels": [
                "deckhand.sandbox": .string(spec.id.uuidString.lowercased()), "deckhand.managed": "true",
                "deckhand.deployment": .string(deployment),
            ],
            "ExposedPorts": exposed,
            "HostConfig": .object(hostConfig),
        ]
        return try await createContainer(body, spec: spec)
    }

    /// A container of an image run as given: its own command in its working folder, its server on the
    /// launch's port. It keeps the image's user and a writable root (a foreign server expects both), with the
    /// capabilities a root shell needs and no more, never privileged, `no-new-privileges`, the same limits and
    /// Deckhand's bridge network: the port is published like Deckhand's own server's (on the host network two
    /// sandboxes' fixed ports would clash, so that is refused).
    func create(
        _ spec: SandboxSpec,
        asGiven launch: SandboxLaunch,
        environment: [String: String]
    ) async throws
        -> String
    {
        guard settings.network == .bridge else {
            throw DeckhandError(
                .runtimeImageUnsupported,
                "an image run as given needs docker.network = bridge (on the host network its server's fixed port "
                    + "\(launch.port) would clash with other sandboxes')"
            )
        }
        try await ensureNetwork()
        var hostConfig: [String: JSONValue] = [
            "Privileged": false,
            "CapDrop": ["ALL"],
            "CapAdd": .array(Self.rootCapabilities.map { .string($0) }),
            "SecurityOpt": ["no-new-privileges"],
            "Init": true,
            "NetworkMode": .string(settings.bridgeNetwork),
            "PortBindings": ["\(launch.port)/tcp": [["HostIp": .string(advertiseHost), "HostPort": ""]]],
        ]
        addLimits(to: &hostConfig, factor: spec.resourceFactor)
        var body: [String: JSONValue] = [
            "Image": .string(spec.image),
            "Env": .array(environment.sorted { $0.key < $1.key }.map { .string("\($0.key)=\($0.value)") }),
            "Labels": [
                "deckhand.sandbox": .string(spec.id.uuidString.lowercased()), "deckhand.managed": "true",
                "deckhand.deployment": .string(deployment), Self.portLabel: .string(String(launch.port)),
            ],
            "ExposedPorts": ["\(launch.port)/tcp": [:]],
            "HostConfig": .object(hostConfig),
        ]
        if !launch.command.isEmpty {
            // The whole command replaces the image's entrypoint and its arguments.
            body["Entrypoint"] = .array(launch.command.prefix(1).map { .string($0) })
            body["Cmd"] = .array(launch.command.dropFirst().map { .string($0) })
        }
        if let folder = launch.workingDir, !folder.isEmpty { body["WorkingDir"] = .string(folder) }
        return try await createContainer(.object(body), spec: spec)
    }

    /// Memory, CPU and process limits (`docker.*`), memory and CPU times the sandbox's resource factor.
    func addLimits(to hostConfig: inout [String: JSONValue], factor: Int) {
        let factor = Double(factor)
        if settings.memoryBytes > 0 { hostConfig["Memory"] = .number(Double(settings.memoryBytes) * factor) }
        if settings.cpus > 0 { hostConfig["NanoCpus"] = .number((settings.cpus * factor * 1e9).rounded()) }
        if settings.pidsLimit > 0 { hostConfig["PidsLimit"] = .number(Double(settings.pidsLimit)) }
    }

    /// The label of an image run as given naming the port its server listens on inside the container.
    static let portLabel = "deckhand.port"

    /// `POST /containers/create` of the sandbox's container (one left by an interrupted attempt is reused).
    func createContainer(_ body: JSONValue, spec: SandboxSpec) async throws -> String {
        let name = "deckhand-sandbox-\(spec.id.uuidString.lowercased())"
        let response = try await call(.post, "/containers/create?name=\(name)", body: body)
        switch response.status {
        case 201:
            guard case .object(let object) = try response.decode(JSONValue.self), let id = object["Id"]?.stringValue
            else {
                throw DeckhandError(.protocolViolation, "Docker created a container but sent no id")
            }
            return id
        case 404 where spec.launch != nil:
            throw DeckhandError(
                .runtimeImageMissing,
                "the image \(spec.image) does not exist on the Docker engine at \(socket) (Deckhand pulls nothing: "
                    + "pull or load it there first)"
            )
        case 404:
            throw DeckhandError(
                .runtimeImageMissing,
                "the sandbox image \(spec.image) does not exist on the Docker engine at \(socket) "
                    + "(build it with deploy/sandbox/build-offline.sh, or set runtime.image)"
            )
        case 409:
            // A container of this sandbox exists already (an interrupted attempt): reuse it.
            let existing = try await list().first { $0.sandboxID == spec.id }
            guard let existing else { throw fail("create the sandbox container", response) }
            return existing.reference
        default:
            throw fail("create the sandbox container", response)
        }
    }

    /// The uid of `docker.user` in Deckhand's sandbox image (its home's tmpfs is made for it).
    static let sandboxUID = 1000

    /// Makes `docker.bridge_network` when it does not exist (Docker's own `bridge` always does). Two workers
    /// making it at once is fine: the second is told it exists.
    func ensureNetwork() async throws {
        let name = settings.bridgeNetwork
        guard name != "bridge" else { return }
        let encoded = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? name
        if try await call(.get, "/networks/\(encoded)").status == 200 { return }
        let body: JSONValue = [
            "Name": .string(name), "Driver": "bridge", "CheckDuplicate": true,
            "IPAM": ["Config": [["Subnet": .string(settings.bridgeSubnet)]]],
            // No traffic between sandboxes (where dockerd manages iptables; each server demands its own key
            // anyway).
            "Options": ["com.docker.network.bridge.enable_icc": "false"],
            "Labels": ["deckhand.managed": "true"],
        ]
        let response = try await call(.post, "/networks/create", body: body)
        guard response.status == 201 || response.status == 409 else {
            // Two provisions that both found no network race to make it; the loser is told that the address
            // pool overlaps (not 409), sometimes before the winner's network can be read (CI saw it on a fresh
            // engine): it waits a little for the network to appear.
            let deadline = ContinuousClock.now + .seconds(5)
            var backoff = Backoff(minimum: .milliseconds(20), maximum: .milliseconds(500))
            repeat {
                if try await call(.get, "/networks/\(encoded)").status == 200 { return }
                try await Task.sleep(for: backoff.next())
            } while ContinuousClock.now < deadline
            throw fail("make the sandbox network \(name) (\(settings.bridgeSubnet))", response)
        }
    }

    public func start(_ reference: String, spec: SandboxSpec) async throws -> StartedSandbox {
        // A restarted container logs a new announcement after the ones of its earlier runs.
        let earlier = settings.network == .host ? try await announcedPorts(reference).count : 0
        let response = try await call(.post, "/containers/\(reference)/start")
        guard response.status == 204 || response.status == 304 else {
            if response.status == 404 { throw DeckhandError(.runtimeLost, "the sandbox's container is gone") }
            throw fail("start the sandbox container", response)
        }
        switch settings.network {
        case .host:
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                let ports = try await announcedPorts(reference)
                if ports.count > earlier, let port = ports.last {
                    return StartedSandbox(url: "http://\(advertiseHost):\(port)")
                }
                let state = try await inspect(reference)
                if state == .stopped || state == .missing {
                    throw DeckhandError(.runtimeNotAlive, "the sandbox container exited before it listened")
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            throw DeckhandError(.runtimeNotAlive, "the sandbox container announced no port within 30 s")
        case .bridge:
            let inspected = try await call(.get, "/containers/\(reference)/json")
            guard inspected.status == 200, case .object(let object) = try inspected.decode(JSONValue.self) else {
                throw fail("inspect the sandbox container", inspected)
            }
            // An image run as given names its server's port in a label; Deckhand's server listens on its own.
            let port = object["Config"]?["Labels"]?[Self.portLabel]?.stringValue ?? String(Self.containerPort)
            guard case .object(let network) = object["NetworkSettings"],
                case .object(let ports) = network["Ports"],
                case .array(let bindings) = ports["\(port)/tcp"],
                case .object(let first) = bindings.first,
                let hostPort = first["HostPort"]?.stringValue
            else {
                throw DeckhandError(.runtimeBackend, "Docker published no port for the sandbox container")
            }
            return StartedSandbox(url: "http://\(advertiseHost):\(hostPort)")
        }
    }

    /// The ports the container's server announced on its standard output, oldest first (one per start).
    func announcedPorts(_ reference: String) async throws -> [Int] {
        let response = try await call(.get, "/containers/\(reference)/logs?stdout=true&stderr=false")
        guard response.status == 200 else {
            if response.status == 404 { throw DeckhandError(.runtimeLost, "the sandbox's container is gone") }
            throw fail("read the sandbox container's log", response)
        }
        return PortAnnouncement.ports(in: Self.demultiplex(response.body))
    }

    /// The text of a log without a TTY: frames of an 8-byte header (stream, 0, 0, 0, big-endian length) and
    /// the payload.
    public static func demultiplex(_ body: [UInt8]) -> String {
        var bytes = body[...]
        var text = ""
        while bytes.count >= 8 {
            let length = bytes.dropFirst(4).prefix(4).reduce(0) { $0 << 8 | Int($1) }
            text += String(decoding: bytes.dropFirst(8).prefix(length), as: UTF8.self)
            bytes = bytes.dropFirst(8 + length)
        }
        return text
    }

    public func stop(_ reference: String) async throws {
        let response = try await call(.post, "/containers/\(reference)/stop?t=10", timeout: .seconds(90))
        guard [204, 304, 404].contains(response.status) else { throw fail("stop the sandbox container", response) }
    }

    public func pause(_ reference: String) async throws {
        let response = try await call(.post, "/containers/\(reference)/pause")
        guard response.status == 204 else {
            if try await inspect(reference) == .paused { return }
            throw fail("pause the sandbox container", response)
        }
    }

    public func resume(_ reference: String) async throws {
        let response = try await call(.post, "/containers/\(reference)/unpause")
        guard response.status == 204 else {
            if try await inspect(reference) == .running { return }
            throw fail("resume the sandbox container", response)
        }
    }

    public func destroy(_ reference: String) async throws {
        let response = try await call(.delete, "/containers/\(reference)?force=true&v=true", timeout: .seconds(90))
        guard [204, 404].contains(response.status) else { throw fail("remove the sandbox container", response) }
    }

    public func inspect(_ reference: String) async throws -> SandboxBackendState {
        let response = try await call(.get, "/containers/\(reference)/json")
        if response.status == 404 { return .missing }
        guard response.status == 200, case .object(let object) = try response.decode(JSONValue.self),
            case .object(let state) = object["State"]
        else { throw fail("inspect the sandbox container", response) }
        return Self.state(state["Status"]?.stringValue)
    }

    /// The backend state of a Docker `State.Status`.
    public static func state(_ status: String?) -> SandboxBackendState {
        switch status {
        case "created": .created
        case "running", "restarting": .running
        case "paused": .paused
        case "removing": .missing
        default: .stopped
        }
    }

    public func list() async throws -> [ListedSandbox] {
        let filters =
            #"{"label":["deckhand.managed=true","deckhand.deployment=\#(deployment)"]}"#
            .addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        let response = try await call(.get, "/containers/json?all=true&filters=\(filters)")
        guard response.status == 200, case .array(let containers) = try response.decode(JSONValue.self) else {
            throw fail("list the sandbox containers", response)
        }
        return containers.compactMap { container in
            guard case .object(let object) = container, let id = object["Id"]?.stringValue,
                case .object(let labels) = object["Labels"],
                let sandbox = labels["deckhand.sandbox"]?.stringValue.flatMap(UUID.init(uuidString:))
            else { return nil }
            return ListedSandbox(sandboxID: sandbox, reference: id, state: Self.state(object["State"]?.stringValue))
        }
    }
}
