/// How runtime-manager workers provision sandboxes (`runtime.*` keys).
public struct RuntimeSettings: Sendable {
    /// A sandbox backend the runtime workers implement.
    public enum Backend: String, Sendable, CaseIterable, Codable {
        case docker, process
        /// A Runtime API's runtimes (`remote.*`).
        case remote
        /// Modal's sandboxes (`modal.*`).
        case modal
    }

    /// One warm-pool target: keep `size` idle sandboxes of `backend` and `image` started.
    public struct PoolTarget: Sendable, Equatable {
        public var backend: Backend
        public var image: String
        public var size: Int

        public init(backend: Backend, image: String, size: Int) {
            self.backend = backend
            self.image = image
            self.size = size
        }
    }

    /// How process sandboxes are confined (`runtime.process_isolation`).
    public enum ProcessIsolation: String, Sendable, CaseIterable {
        /// bubblewrap: own user, mount, PID, IPC and UTS namespaces, a read-only system, the workspace as the
        /// only writable place besides small `/tmp` and home tmpfs, and (when the worker is root) a uid of
        /// the sandbox's own.
        case bwrap
        /// None: the sandbox runs as the worker's user and sees what it sees. Development on a trusted machine only.
        case none
    }

    /// `runtime.backend`: `docker`, `process`, or `auto` (nil here: Docker when `docker.socket` is set).
    public var backend: Backend? = nil
    /// `runtime.image`: the Docker image of a sandbox.
    public var image: String = "deckhand/sandbox:0.1.0"
    /// `runtime.sandbox_binary`: the `deckhand-sandbox` executable of process sandboxes (nil: beside `deckhand`).
    public var sandboxBinary: String? = nil
    /// `runtime.workspace_root`: where process sandboxes get their folders.
    public var workspaceRoot: String = "/var/tmp/deckhand/sandboxes"
    /// `runtime.user_backends`: the backends a caller may name for a conversation (besides the operator's
    /// `runtime.backend` when it is not `auto`); empty: callers cannot choose.
    public var userBackends: [Backend] = []
    /// `runtime.process_isolation`: how process sandboxes are confined.
    public var processIsolation: ProcessIsolation = .bwrap
    /// `runtime.process_max_processes`: the processes one isolated process sandbox may run (its uid's
    /// `RLIMIT_NPROC`; applies when the worker is root and each sandbox has a uid of its own).
    public var processMaxProcesses: Int = 1024
    /// `runtime.process_tmp_size`: the size of an isolated process sandbox's `/tmp`, and of its home, in bytes
    /// (memory-backed).
    public var processTmpBytes: Int = 256 << 20
    /// `runtime.warm_pool`: the warm-pool targets.
    public var warmPool: [PoolTarget] = []
    /// `runtime.alive_timeout`: how long a new sandbox may take to answer `/alive`.
    public var aliveTimeout: Duration = .seconds(60)
    /// `runtime.probe_deadline`: how long a running sandbox that stopped answering is probed (with back-off)
    /// before it is restarted in place. It is declared lost only when its backend no longer has it.
    public var probeDeadline: Duration = .seconds(20)
    /// `runtime.lease`: how long a provision in progress is reserved to the worker doing it without a renewal.
    public var lease: Duration = .seconds(15)
    /// `runtime.node_lease`: how long a node counts as alive after its runtime workers last renewed its lease
    /// (each renews it every third of this). A node silent for longer is taken for dead: a surviving worker
    /// marks its sandboxes lost, and what waited in its queue comes back to the shared one. Longer than a
    /// rolling restart of a node's runtime workers takes, or the restart costs its conversations their files.
    public var nodeLease: Duration = .seconds(60)
    /// `runtime.maintenance_interval`: how often a worker tries to do the pool maintenance.
    public var maintenanceInterval: Duration = .seconds(30)
    /// `runtime.command_retry_for`: how long a runtime command (provision, pause, resume, stop, destroy) is
    /// retried through an outage before it goes to the dead queue: a conversation waiting for its sandbox
    /// gets it once the outage is over.
    public var commandRetryFor: Duration = .seconds(900)
    /// `runtime.idle_pause_after`: a claimed sandbox unused this long is paused (zero: never).
    public var idlePauseAfter: Duration = .seconds(15 * 60)
    /// `runtime.idle_stop_after`: a claimed sandbox unused this long is stopped (zero: never).
    public var idleStopAfter: Duration = .seconds(60 * 60)
    /// `runtime.idle_destroy_after`: a claimed sandbox unused this long is destroyed (zero: never).
    public var idleDestroyAfter: Duration = .seconds(7 * 24 * 60 * 60)
    /// `runtime.shutdown_timeout`: how long a stopping worker lets in-flight commands finish.
    public var shutdownTimeout: Duration = .seconds(30)
    /// `runtime.environment`: variables set in every sandbox (`KEY=VALUE`, comma-separated). May hold secrets:
    /// never logged.
    public var environment: [String: String] = [:]

    public init() {}

    static let keys: Set<String> = [
        "runtime.backend", "runtime.image", "runtime.sandbox_binary", "runtime.workspace_root", "runtime.warm_pool",
        "runtime.alive_timeout", "runtime.lease", "runtime.maintenance_interval", "runtime.idle_pause_after",
        "runtime.idle_stop_after", "runtime.idle_destroy_after", "runtime.shutdown_timeout", "runtime.environment",
        "runtime.process_isolation", "runtime.process_max_processes", "runtime.process_tmp_size",
        "runtime.user_backends", "runtime.command_retry_for", "runtime.probe_deadline", "runtime.node_lease",
    ]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        let backendName = try reader.choice(
            "runtime.backend",
            default: "auto",
            choices: ["auto", "docker", "process", "remote", "modal"]
        )
        backend = Backend(rawValue: backendName)
        image = reader.optionalString("runtime.image") ?? image
        sandboxBinary = reader.optionalString("runtime.sandbox_binary")
        if let path = reader.optionalString("runtime.workspace_root") {
            guard path.hasPrefix("/") else {
                throw reader.invalid("runtime.workspace_root", expected: "an absolute path", got: path)
            }
            workspaceRoot = path
        }
        if let text = reader.optionalString("runtime.user_backends") {
            var backends: [Backend] = []
            for name in text.split(separator: ",").map({ $0.trimmingWhitespace() }) where !name.isEmpty {
                guard let backend = Backend(rawValue: String(name)) else {
                    throw reader.invalid(
                        "runtime.user_backends",
                        expected:
                            "a comma-separated list of \(Backend.allCases.map(\.rawValue).joined(separator: ", "))",
                        got: text
                    )
                }
                if !backends.contains(backend) { backends.append(backend) }
            }
            userBackends = backends
        }
        let isolation = try reader.choice(
            "runtime.process_isolation",
            default: processIsolation.rawValue,
            choices: ProcessIsolation.allCases.map(\.rawValue)
        )
        processIsolation = ProcessIsolation(rawValue: isolation) ?? .bwrap
        processMaxProcesses = try reader.int(
            "runtime.process_max_processes",
            default: processMaxProcesses,
            range: 16...1_000_000
        )
        if let text = reader.optionalString("runtime.process_tmp_size") {
            guard let bytes = DockerSettings.parseBytes(text), bytes >= 1 << 20 else {
                throw reader.invalid(
                    "runtime.process_tmp_size",
                    expected: "a size of at least 1m, such as 256m",
                    got: text
                )
            }
            processTmpBytes = bytes
        }
        if let text = reader.optionalString("runtime.warm_pool") {
            guard let targets = Self.parsePool(text, defaultImage: image) else {
                throw reader.invalid(
                    "runtime.warm_pool",
                    expected: "a comma-separated list of backend[:image]=size, such as `process=2, docker=4`",
                    got: text
                )
            }
            warmPool = targets
        }
        aliveTimeout = try reader.duration("runtime.alive_timeout", default: aliveTimeout, minimum: .milliseconds(100))
        probeDeadline = try reader.duration("runtime.probe_deadline", default: probeDeadline)
        lease = try reader.duration("runtime.lease", default: lease, minimum: .seconds(1))
        nodeLease = try reader.duration("runtime.node_lease", default: nodeLease, minimum: .seconds(1))
        maintenanceInterval = try reader.duration(
            "runtime.maintenance_interval",
            default: maintenanceInterval,
            minimum: .milliseconds(100)
        )
        commandRetryFor = try reader.duration("runtime.command_retry_for", default: commandRetryFor)
        idlePauseAfter = try reader.duration("runtime.idle_pause_after", default: idlePauseAfter)
        idleStopAfter = try reader.duration("runtime.idle_stop_after", default: idleStopAfter)
        idleDestroyAfter = try reader.duration("runtime.idle_destroy_after", default: idleDestroyAfter)
        shutdownTimeout = try reader.duration("runtime.shutdown_timeout", default: shutdownTimeout)
        if let text = reader.raw("runtime.environment") {
            guard let variables = Self.parseEnvironment(text) else {
                // Values may be secrets: name the key and the shape only.
                throw DeckhandError(
                    .invalidConfiguration,
                    "runtime.environment: expected a comma-separated list of KEY=VALUE with KEY a shell variable name (the value is not shown; it may hold secrets)"
                )
            }
            environment = variables
        }
    }

    /// Parses `process=2, docker:deckhand/sandbox:0.1.0=4`; a target without an image uses `defaultImage`
    /// (process sandboxes have no image: theirs is `deckhand-sandbox`).
    public static func parsePool(_ text: String, defaultImage: String) -> [PoolTarget]? {
        var targets: [PoolTarget] = []
        for item in text.split(separator: ",") {
            let entry = item.trimmingWhitespace()
            guard let equals = entry.lastIndex(of: "="), let size = Int(entry[entry.index(after: equals)...]),
                (0...1000).contains(size)
            else { return nil }
            let name = entry[..<equals]
            let backendName = name.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
            guard let backend = Backend(rawValue: backendName) else { return nil }
            var image = name.count > backendName.count ? String(name.dropFirst(backendName.count + 1)) : ""
            if image.isEmpty { image = backend == .process ? processImage : defaultImage }
            targets.append(PoolTarget(backend: backend, image: image, size: size))
        }
        return targets
    }

    /// Parses `KEY=VALUE, OTHER=VALUE` (values may contain `=`).
    public static func parseEnvironment(_ text: String) -> [String: String]? {
        var variables: [String: String] = [:]
        for item in text.split(separator: ",") {
            let entry = item.trimmingWhitespace()
            guard let equals = entry.firstIndex(of: "=") else { return nil }
            let key = String(entry[..<equals])
            guard let first = key.first, first == "_" || first.isLetter,
                key.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) })
            else { return nil }
            variables[key] = String(entry[entry.index(after: equals)...])
        }
        return variables
    }

    /// The image name recorded for process sandboxes.
    public static let processImage = "deckhand-sandbox"
}
