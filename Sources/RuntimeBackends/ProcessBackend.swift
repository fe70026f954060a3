import CProcessSpawn
import DeckhandCore
import DeckhandPOSIX
import Foundation
import Logging
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Sandboxes as `deckhand-sandbox` child processes on this machine: the embedded default where no Docker
/// engine answers, and the backend of most tests. Each is confined by ``ProcessJail`` (bubblewrap namespaces
/// and, under a root worker, a uid of its own) unless `runtime.process_isolation = none`.
///
/// A sandbox is a folder `<workspace_root>/<id>` (its reference) holding `workspace/`, the server's log, the
/// port it listens on (it picks a free one, so two workers never share a port) and its pid with the process's
/// start time (so a recycled pid is never mistaken for it). Each server watches a lifeline pipe whose write
/// end only this process holds: when the worker dies, however it dies, its sandboxes shut down. Any worker on
/// the same machine can manage any process sandbox; a worker elsewhere sees none of them. Servers listen on
/// the node's advertised address (`node.advertise_host`), which their URLs name.
public struct ProcessBackend: SandboxBackend {
    public let root: String
    public let binary: String
    /// The address sandbox servers listen on and their URLs name (`node.advertise_host`).
    public let advertiseHost: String
    /// How sandboxes are confined; nil: not at all (`runtime.process_isolation = none`).
    public let jail: ProcessJail?
    let logger: Logger

    /// `settings` gives `runtime.process_*`: isolation (bubblewrap unless `none`), process and `/tmp` limits.
    public init(
        root: String,
        binary: String? = nil,
        settings: RuntimeSettings = RuntimeSettings(),
        advertiseHost: String = "127.0.0.1",
        logger: Logger
    )
        throws
    {
        self.root = root
        self.advertiseHost = advertiseHost
        self.binary = binary ?? Self.defaultBinary
        self.logger = logger
        guard FileManager.default.isExecutableFile(atPath: self.binary) else {
            throw DeckhandError(
                .invalidConfiguration,
                "runtime.sandbox_binary: \(self.binary) is not an executable deckhand-sandbox "
                    + "(build it with `swift build --product deckhand-sandbox`, or set runtime.sandbox_binary)"
            )
        }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        switch settings.processIsolation {
        case .bwrap:
            jail = try ProcessJail.prepare(binary: self.binary, root: root, settings: settings)
            // Sandbox uids must pass through the root to reach their workspaces (never list it).
            if jail?.separateUIDs == true { Self.allowTraversal(to: root) }
        case .none:
            jail = nil
            logger.warning(
                "process sandboxes are NOT isolated (runtime.process_isolation = none): the agent's commands run as this user and see this machine"
            )
        }
    }

    /// Lets every user pass through `path` and its parents (`o+x`), without letting them list any of them.
    static func allowTraversal(to path: String) {
        var current = path
        while current.count > 1 {
            var status = stat()
            if stat(current, &status) == 0, status.st_mode & 0o001 == 0 {
                chmod(current, mode_t(status.st_mode & 0o7777) | 0o001)
            }
            current = (current as NSString).deletingLastPathComponent
        }
    }

    /// `deckhand-sandbox` beside the running executable.
    public static var defaultBinary: String {
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("deckhand-sandbox")
            .path
    }

    public var kind: RuntimeSettings.Backend { .process }

    struct Paths {
        let folder: String
        var workspace: String { folder + "/workspace" }
        var portFile: String { folder + "/port" }
        var pidFile: String { folder + "/pid" }
        var log: String { folder + "/sandbox.log" }
        /// What the sandbox was made with beyond the worker's settings (its requested environment and resource
        /// factor), kept for every later start: the worker's own file (0600), which the sandbox cannot read.
        var requested: String { folder + "/requested.json" }
        /// Mounted at `/run/deckhand` in an isolated sandbox: the session key's way in, and the sandbox's
        /// accounts (its `/etc/passwd` and `/etc/group` link there).
        var run: String { folder + "/run" }
    }

    func paths(_ reference: String) throws -> Paths {
        // The reference is a folder under our root, never anything else.
        guard reference.hasPrefix(root + "/"), !reference.contains("/../"),
            UUID(uuidString: String(reference.dropFirst(root.count + 1))) != nil
        else {
            throw DeckhandError(.runtimeBackend, "\(reference) is not a process sandbox of \(root)")
        }
        return Paths(folder: reference)
    }

    // MARK: SandboxBackend

    public func create(_ spec: SandboxSpec) async throws -> String {
        if spec.launch != nil {
            throw DeckhandError(
                .runtimeImageUnsupported,
                "process sandboxes run only Deckhand's sandbox server, not an image as given: run the runtime "
                    + "workers on the docker or remote backend, or map the image to `sandbox` in runtime_api.image_map"
            )
        }
        let reference = root + "/" + spec.id.uuidString.lowercased()
        let paths = try paths(reference)
        let jail = jail
        try await blocking {
            try FileManager.default.createDirectory(atPath: paths.workspace, withIntermediateDirectories: true)
            if !spec.environment.isEmpty || spec.resourceFactor > 1 {
                let requested: JSONValue = [
                    "environment": .object(spec.environment.mapValues(JSONValue.string)),
                    "resource_factor": .number(Double(spec.resourceFactor)),
                ]
                try Self.writeNew(paths.requested, requested.serialized, mode: 0o600, owner: nil)
            }
            guard let jail else {
                chmod(paths.folder, 0o700)
                return
            }
            try FileManager.default.createDirectory(atPath: paths.run, withIntermediateDirectories: true)
            let uid = jail.separateUIDs ? try SandboxUIDs.claim(for: paths.folder) : getuid()
            // The sandbox's uid may pass through its folder to the workspace and the run folder, which are
            // its own; the log and pid files stay the worker's.
            chmod(paths.folder, jail.separateUIDs ? 0o711 : 0o700)
            for folder in [paths.workspace, paths.run] {
                chown(folder, uid, uid)
                chmod(folder, 0o700)
            }
        }
        return reference
    }

    public func start(_ reference: String, spec: SandboxSpec) async throws -> StartedSandbox {
        let paths = try paths(reference)
        guard FileManager.default.fileExists(atPath: paths.workspace) else {
            throw DeckhandError(.runtimeLost, "the process sandbox's folder \(paths.folder) is gone")
        }
        if let process = SandboxProcess.running(paths) {
            if let port = Self.readPort(paths.portFile) { return StartedSandbox(url: url(port: port)) }
            await process.terminate(grace: .seconds(5))
        }
        try? FileManager.default.removeItem(atPath: paths.portFile)
        // The server announces its port on its output, which goes to the log: read what comes after this.
        let logStart =
            (try? FileManager.default.attributesOfItem(atPath: paths.log)[.size] as? NSNumber)??.intValue ?? 0
        let process = try await blocking { try self.spawn(paths: paths, spec: spec) }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let (port, alive) = try await blocking { (Self.announcedPort(paths.log, from: logStart), process.isAlive) }
            if let port {
                try await blocking {
                    try Data("\(port)\n".utf8).write(to: URL(fileURLWithPath: paths.portFile), options: .atomic)
                }
                return StartedSandbox(url: url(port: port))
            }
            if !alive {
                let log = (try? String(contentsOfFile: paths.log, encoding: .utf8)) ?? ""
                throw DeckhandError(
                    .runtimeBackend,
                    "deckhand-sandbox exited at start: \(log.suffix(500).trimmingCharacters(in: .whitespacesAndNewlines))"
                )
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        await process.terminate(grace: .seconds(1))
        throw DeckhandError(.runtimeNotAlive, "deckhand-sandbox reported no port within 30 s")
    }

    /// The URL of a server of this backend listening on `port`.
    func url(port: Int) -> String { "http://\(advertiseHost):\(port)" }

    /// The port in the first `deckhand-sandbox port <n>` line of `log` after byte `offset`.
    static func announcedPort(_ log: String, from offset: Int) -> Int? {
        guard let handle = FileHandle(forReadingAtPath: log) else { return nil }
        defer { try? handle.close() }
        guard (try? handle.seek(toOffset: UInt64(offset))) != nil, let data = try? handle.readToEnd() else {
            return nil
        }
        return PortAnnouncement.ports(in: String(decoding: data, as: UTF8.self)).first
    }

    /// What runs: the server itself (unconfined), or the jail's command around it. The session key goes to an
    /// isolated server as a file it deletes once read (an environment can be read by its children and, through
    /// `/proc`, by anything else of its user).
    private func launch(
        paths: Paths,
        spec: SandboxSpec
    ) throws -> (arguments: [String], environment: [String: String], uid: uid_t?) {
        let server = ["--host", advertiseHost, "--port", "0", "--announce-port", "--lifeline-fd", "3"]
        guard let jail else {
            let inherited = ProcessInfo.processInfo.environment
            var environment: [String: String] = [:]
            for key in ["PATH", "HOME", "LANG", "USER", "TMPDIR"] { environment[key] = inherited[key] }
            environment["PATH"] = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
            environment.merge(spec.environment) { _, new in new }
            environment["SESSION_API_KEY"] = spec.sessionAPIKey
            return ([binary] + server + ["--working-dir", paths.workspace], environment, nil)
        }
        let uid: uid_t? = jail.separateUIDs ? try SandboxUIDs.claim(for: paths.folder) : nil
        let accounts = ProcessJail.accounts(uid: uid ?? getuid())
        try Self.writeNew(paths.run + "/session-key", spec.sessionAPIKey, mode: 0o600, owner: uid)
        try Self.writeNew(paths.run + "/passwd", accounts.passwd, mode: 0o644, owner: nil)
        try Self.writeNew(paths.run + "/group", accounts.group, mode: 0o644, owner: nil)
        let etc = try jail.systemFiles.etc()
        return (
            jail.command(folder: paths, etc: etc, serverArguments: server, resourceFactor: spec.resourceFactor),
            jail.environment(spec.environment), uid
        )
    }

    /// Writes `contents` to a new file at `path` in a folder the sandbox owns: whatever the sandbox left there
    /// (a link to a host file, say) is removed first and never followed.
    static func writeNew(_ path: String, _ contents: String, mode: mode_t, owner: uid_t?) throws {
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw DeckhandError(.runtimeBackend, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let bytes = Array(contents.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else {
            throw DeckhandError(.runtimeBackend, "cannot write \(path)")
        }
        fchmod(fd, mode)
        if let owner { fchown(fd, owner, owner) }
    }

    private func spawn(paths: Paths, spec: SandboxSpec) throws -> SandboxProcess {
        var spec = spec
        if let text = try? String(contentsOfFile: paths.requested, encoding: .utf8),
            let requested = try? JSONValue(parsing: Array(text.utf8))
        {
            if case .object(let variables)? = requested["environment"] {
                for (key, value) in variables { if let value = value.stringValue { spec.environment[key] = value } }
            }
            spec.resourceFactor = max(spec.resourceFactor, requested["resource_factor"]?.intValue ?? 1)
        }
        let (arguments, environment, uid) = try launch(paths: paths, spec: spec)
        let log = open(paths.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer {
            if log >= 0 { close(log) }
            if null >= 0 { close(null) }
        }
        guard log >= 0, null >= 0 else {
            throw DeckhandError(.runtimeBackend, "cannot open \(paths.log): \(String(cString: strerror(errno)))")
        }
        var pid: pid_t = 0
        let executable = arguments[0]
        let result = withCStringArray(arguments) { argv in
            withCStringArray(environment.map { "\($0.key)=\($0.value)" }) { envp in
                if let uid {
                    deckhand_spawn_process_as(executable, argv, envp, null, log, log, Lifeline.readEnd, uid, uid, &pid)
                } else {
                    deckhand_spawn_process(executable, argv, envp, null, log, log, Lifeline.readEnd, &pid)
                }
            }
        }
        guard result == 0 else {
            throw DeckhandError(
                .runtimeBackend,
                "cannot start \(executable): \(String(cString: strerror(-result)))"
            )
        }
        let process = SandboxProcess(
            pid: pid,
            startTime: SandboxProcess.startTime(of: pid) ?? 0,
            jailed: jail != nil
        )
        try process.write(paths.pidFile)
        Reaper.watch(pid)
        return process
    }

    public func stop(_ reference: String) async throws {
        let paths = try paths(reference)
        if let process = SandboxProcess.running(paths) {
            try await blocking { process.signalTree(SIGCONT) }
            await process.terminate(grace: .seconds(10))
        }
        try? FileManager.default.removeItem(atPath: paths.pidFile)
        try? FileManager.default.removeItem(atPath: paths.portFile)
    }

    public func pause(_ reference: String) async throws {
        try await signalTree(reference, SIGSTOP, untilStopped: true)
    }

    public func resume(_ reference: String) async throws {
        try await signalTree(reference, SIGCONT, untilStopped: false)
    }

    /// Signals the running server's whole tree, and returns once the server is stopped or running again (a
    /// signal is delivered when the process is next scheduled).
    private func signalTree(_ reference: String, _ signal: Int32, untilStopped stopped: Bool) async throws {
        guard let process = SandboxProcess.running(try paths(reference)) else {
            throw DeckhandError(.runtimeLost, "the process sandbox is not running")
        }
        try await blocking { process.signalTree(signal) }
        await process.waitUntil(stopped: stopped)
    }

    public func destroy(_ reference: String) async throws {
        let paths = try paths(reference)
        try await stop(reference)
        try await blocking {
            SandboxUIDs.release(for: paths.folder)
            try? FileManager.default.removeItem(atPath: paths.folder)
        }
    }

    public func inspect(_ reference: String) async throws -> SandboxBackendState {
        let paths = try paths(reference)
        return try await blocking { Self.state(paths) }
    }

    public func list() async throws -> [ListedSandbox] {
        let root = root
        return try await blocking {
            ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap { name in
                guard let id = UUID(uuidString: name) else { return nil }
                let reference = root + "/" + name
                return ListedSandbox(sandboxID: id, reference: reference, state: Self.state(Paths(folder: reference)))
            }
        }
    }

    static func state(_ paths: Paths) -> SandboxBackendState {
        guard FileManager.default.fileExists(atPath: paths.workspace) else { return .missing }
        guard let process = SandboxProcess.running(paths) else { return .stopped }
        return process.isStopped ? .paused : .running
    }

    /// Runs file-system and process-table work on NIO's thread pool, off the cooperative pool.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }

    static func readPort(_ path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

/// A sandbox server process, named by its pid and the kernel's start time for it. A jailed one is bubblewrap's
/// outer process: the server runs below it, and it ends when the server does.
struct SandboxProcess {
    let pid: pid_t
    let startTime: UInt64
    var jailed = false

    /// The sandbox's server, if its pid file names a live process.
    static func running(_ paths: ProcessBackend.Paths) -> SandboxProcess? {
        guard let process = read(paths.pidFile), process.isAlive else { return nil }
        return process
    }

    static func read(_ path: String) -> SandboxProcess? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let fields = text.split(whereSeparator: \.isWhitespace)
        guard fields.count == 2 || fields.count == 3, let pid = pid_t(fields[0]), let start = UInt64(fields[1]) else {
            return nil
        }
        return SandboxProcess(pid: pid, startTime: start, jailed: fields.count == 3 && fields[2] == "jailed")
    }

    func write(_ path: String) throws {
        try Data("\(pid) \(startTime)\(jailed ? " jailed" : "")\n".utf8).write(
            to: URL(fileURLWithPath: path),
            options: .atomic
        )
    }

    /// `/proc/<pid>/stat` after the command name: state is field 3, start time field 22.
    static func stat(_ pid: pid_t) -> [Substring]? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }

    static func startTime(of pid: pid_t) -> UInt64? {
        guard let fields = stat(pid), fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    /// Alive and the same process (not a zombie, not a recycled pid).
    var isAlive: Bool {
        guard let fields = Self.stat(pid), fields.count > 19, fields[0] != "Z", fields[0] != "X" else { return false }
        return UInt64(fields[19]) == startTime
    }

    var isStopped: Bool { Self.stat(pid)?.first == "T" }

    /// Waits (at most 5 s) until the process is stopped or running again.
    func waitUntil(stopped: Bool) async {
        let deadline = ContinuousClock.now + .seconds(5)
        while isAlive, isStopped != stopped, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    /// The server and every process below it (the shell runs in a session of its own, so a process group
    /// would miss it).
    func tree() -> [pid_t] {
        var children: [pid_t: [pid_t]] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let child = pid_t(name), let fields = Self.stat(child), fields.count > 1,
                let parent = pid_t(fields[1])
            else { continue }
            children[parent, default: []].append(child)
        }
        var result = [pid]
        var index = 0
        while index < result.count {
            result += children[result[index]] ?? []
            index += 1
        }
        return result
    }

    func signalTree(_ signal: Int32) {
        guard isAlive else { return }
        for member in tree() { kill(member, signal) }
    }

    /// SIGTERM (the server ends its shell), then SIGKILL to whatever is left after `grace`. In a jail the
    /// signal goes to the processes below bubblewrap (whose outer process would just die, and whose init in
    /// the sandbox's PID namespace ignores it): the server ends, and bubblewrap with it.
    func terminate(grace: Duration) async {
        guard isAlive else { return }
        let process = self
        let members = (try? await NIOThreadPool.singleton.runIfActive { process.tree() }) ?? [pid]
        if jailed {
            for member in members.dropFirst() { kill(member, SIGTERM) }
        } else {
            kill(pid, SIGTERM)
        }
        let deadline = ContinuousClock.now + grace
        while isAlive, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        for member in members { kill(member, SIGKILL) }
    }
}

/// The pipe every process sandbox of this process watches: its write end is open only here, so the kernel
/// closes it when this process ends and each sandbox reads end-of-file.
enum Lifeline {
    static let readEnd: Int32 = {
        var fds: [Int32] = [0, 0]
        guard deckhand_pipe_cloexec(&fds) == 0 else { return -1 }
        // The write end is never written and never closed: it lives as long as this process.
        return fds[0]
    }()
}

/// Collects the exit status of each child sandbox, so none lingers as a zombie.
enum Reaper {
    static func watch(_ pid: pid_t) {
        let thread = Thread {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        }
        thread.name = "reap-\(pid)"
        thread.start()
    }
}
