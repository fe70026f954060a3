import CProcessSpawn
import DeckhandCore
import DeckhandPOSIX
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How an isolated process sandbox is started: `deckhand-sandbox` inside bubblewrap, with its own user, mount,
/// PID, IPC and UTS namespaces. Inside it sees a read-only `/usr` and a few files of `/etc`, its workspace at
/// `/workspace` (the only writable place on disk), a small memory-backed `/tmp` and home, its own `/proc` and a
/// minimal `/dev` — no other sandbox, no host process, no file of the platform. When the worker is root, each
/// sandbox also runs as a uid of its own (``SandboxUIDs``), dropped in the spawn itself before bubblewrap
/// starts (`deckhand_spawn_process_as`: no helper to exec), so the kernel
/// itself keeps sandboxes and the host's files apart; a worker that is not root runs its sandboxes as itself,
/// and the namespaces alone separate them. The network is the host's (the worker reaches the server on
/// 127.0.0.1): services on the host must demand credentials, which no sandbox holds.
public struct ProcessJail: Sendable {
    /// `bwrap`'s path.
    let bubblewrap: String
    /// Whether sandboxes get uids of their own (the worker is root).
    let separateUIDs: Bool
    /// The `deckhand-sandbox` the sandboxes run, where every sandbox uid can read it.
    let binary: String
    /// Folders of shared libraries the binary needs outside `/usr` (a debug build's Swift runtime).
    let libraryFolders: [String]
    /// The size of `/tmp` and of the home folder.
    let tmpBytes: Int
    /// The processes one sandbox uid may run.
    let maxProcesses: Int
    /// The `/etc` the sandboxes see.
    let systemFiles: SystemFiles

    /// Where the server finds itself, its key and its workspace inside the sandbox.
    static let binaryInside = "/opt/deckhand/deckhand-sandbox"
    static let runInside = "/run/deckhand"
    static let keyInside = runInside + "/session-key"
    static let workspaceInside = "/workspace"
    static let home = "/home/sandbox"
    static let userName = "sandbox"

    /// Files and folders of the host's `/etc` a sandbox sees (read-only, where they exist): name resolution,
    /// certificates, the dynamic linker's cache, the alternatives links, time zone, shell and tool defaults.
    static let etcEntries = [
        "hosts", "resolv.conf", "nsswitch.conf", "host.conf", "gai.conf", "services", "protocols", "ssl",
        "ca-certificates", "ca-certificates.conf", "pki", "alternatives", "localtime", "timezone", "ld.so.cache",
        "ld.so.conf", "ld.so.conf.d", "mime.types", "bash.bashrc", "inputrc", "profile", "gitconfig", "python3",
        "python3.11", "os-release", "debian_version", "terminfo", "magic", "environment", "login.defs",
    ]

    /// Finds bubblewrap, stages `binary` where sandbox uids can reach it (for a root worker), and reads which
    /// library folders it needs (once per binary and process). Fails, naming what is missing, rather than run
    /// sandboxes unconfined.
    static func prepare(binary: String, root: String, settings: RuntimeSettings) throws -> ProcessJail {
        guard let bubblewrap = Self.find("bwrap") else {
            throw DeckhandError(
                .invalidConfiguration,
                "runtime.process_isolation is bwrap but bwrap is not installed (apt-get install bubblewrap); "
                    + "runtime.process_isolation = none runs process sandboxes unconfined, for development on a trusted machine only"
            )
        }
        let isRoot = geteuid() == 0
        let (staged, libraries) = try prepared.withLock { known in
            if let done = known[binary] { return done }
            let done = (isRoot ? try Self.stage(binary) : binary, Self.libraryFolders(of: binary))
            known[binary] = done
            return done
        }
        // Staged by the first start (on the blocking pool), not here: a backend is made on the way to
        // serving, often from async code.
        let systemFiles = SystemFiles(root: root)
        return ProcessJail(
            bubblewrap: bubblewrap,
            separateUIDs: isRoot,
            binary: staged,
            libraryFolders: libraries,
            tmpBytes: settings.processTmpBytes,
            maxProcesses: settings.processMaxProcesses,
            systemFiles: systemFiles
        )
    }

    /// The command that starts the server of the sandbox in `folder` with `etc` (``SystemFiles``) as its
    /// `/etc`, and `serverArguments` after the server's path (the caller adds the port announcement and the
    /// lifeline, and drops to the sandbox's uid).
    func command(
        folder: ProcessBackend.Paths,
        etc: String,
        serverArguments: [String],
        resourceFactor: Int = 1
    ) -> [String] {
        let tmpBytes = self.tmpBytes * resourceFactor
        var command = [
            bubblewrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--disable-userns", "--new-session", "--hostname", "sandbox",
        ]
        command += Self.systemMounts()
        for folder in libraryFolders { command += ["--ro-bind", folder, folder] }
        command += [
            "--ro-bind", etc, "/etc",
            "--proc", "/proc", "--dev", "/dev",
            "--size", String(tmpBytes), "--tmpfs", "/tmp",
            "--size", String(tmpBytes), "--tmpfs", "/home", "--dir", Self.home,
            "--bind", folder.workspace, Self.workspaceInside,
            "--bind", folder.run, Self.runInside,
            "--ro-bind", binary, Self.binaryInside,
            "--remount-ro", "/",
            "--chdir", Self.workspaceInside,
            "--", Self.binaryInside,
        ]
        command += serverArguments
        command += ["--working-dir", Self.workspaceInside, "--session-key-file", Self.keyInside]
        if separateUIDs { command += ["--max-processes", String(maxProcesses * resourceFactor)] }
        return command
    }

    /// `/usr` read-only, and `/bin`, `/lib`, `/lib64`, `/sbin` as the host has them (links into `/usr` on a
    /// merged-`/usr` system, folders otherwise).
    static func systemMounts() -> [String] {
        var mounts = ["--ro-bind", "/usr", "/usr"]
        for name in ["/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin"] {
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: name) {
                mounts += ["--symlink", target, name]
            } else if FileManager.default.fileExists(atPath: name) {
                mounts += ["--ro-bind", name, name]
            }
        }
        return mounts
    }

    /// The environment of the server (and, through it, of the agent's shell): nothing of the worker's.
    func environment(_ extra: [String: String]) -> [String: String] {
        var environment = [
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": Self.home, "USER": Self.userName, "LOGNAME": Self.userName, "SHELL": "/bin/bash",
            "LANG": "C.UTF-8", "TMPDIR": "/tmp",
        ]
        environment.merge(extra) { _, new in new }
        environment["SESSION_API_KEY"] = nil
        return environment
    }

    /// `/etc/passwd` and `/etc/group` of a sandbox: root, nobody, and `sandbox` with the sandbox's uid.
    static func accounts(uid: uid_t) -> (passwd: String, group: String) {
        (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\(userName):x:\(uid):\(uid):\(userName):\(home):/bin/bash\n"
                + "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            "root:x:0:\n\(userName):x:\(uid):\nnogroup:x:65534:\n"
        )
    }

    // MARK: Preparation

    static func find(_ tool: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let folders = path.split(separator: ":").map(String.init) + ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        return folders.map { $0 + "/" + tool }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Where staged binaries live: one copy per build for every worker of the machine.
    static let stagingFolder = "/var/lib/deckhand/bin"

    /// What was staged and read, per binary, in this process (backends are made often in tests).
    private static let prepared = Mutex<[String: (staged: String, libraries: [String])]>([:])

    /// Copies `binary` to `/var/lib/deckhand/bin/deckhand-sandbox-<size>-<mtime>` (once per build), readable by
    /// all: the sandbox uids cannot be expected to reach the build folder or a home.
    static func stage(_ binary: String) throws -> String {
        let attributes = try FileManager.default.attributesOfItem(atPath: binary)
        let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
        let modified = Int64(((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0) * 1000)
        let folder = stagingFolder
        let staged = folder + "/deckhand-sandbox-\(size)-\(modified)"
        if FileManager.default.fileExists(atPath: staged) { return staged }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        chmod(folder, 0o755)
        chmod((folder as NSString).deletingLastPathComponent, 0o755)
        let temporary = staged + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        try FileManager.default.copyItem(atPath: binary, toPath: temporary)
        chmod(temporary, 0o755)
        guard rename(temporary, staged) == 0 else {
            unlink(temporary)
            throw DeckhandError(
                .runtimeBackend,
                "cannot stage \(binary) at \(staged): \(String(cString: strerror(errno)))"
            )
        }
        return staged
    }

    /// The folders outside `/usr` (and its links) that hold shared libraries `binary` loads, from `ldd` (run
    /// with `posix_spawn`, its output in a temporary file).
    static func libraryFolders(of binary: String) -> [String] {
        guard let ldd = find("ldd") else { return [] }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("deckhand-ldd-\(UUID()).txt").path
        let fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer {
            if fd >= 0 { close(fd) }
            if null >= 0 { close(null) }
            unlink(output)
        }
        guard fd >= 0, null >= 0 else { return [] }
        var pid: pid_t = 0
        let spawned = withCStringArray([ldd, binary]) { argv in
            withCStringArray(["PATH=/usr/bin:/bin", "LANG=C"]) { envp in
                deckhand_spawn_process(ldd, argv, envp, null, fd, null, -1, &pid)
            }
        }
        guard spawned == 0 else { return [] }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        return parseLibraryFolders((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }

    /// `libfoo.so => /opt/x/libfoo.so (0x…)` lines → `/opt/x`, skipping what `/usr` and its links hold.
    static func parseLibraryFolders(_ ldd: String) -> [String] {
        var folders: [String] = []
        for line in ldd.split(separator: "\n") {
            guard let arrow = line.range(of: "=> ") else { continue }
            let path = line[arrow.upperBound...].split(separator: " ").first.map(String.init) ?? ""
            guard path.hasPrefix("/"), let slash = path.lastIndex(of: "/") else { continue }
            let folder = String(path[..<slash])
            let covered = ["/usr/", "/lib/", "/lib64/", "/lib32/", "/libx32/"].contains { (folder + "/").hasPrefix($0) }
            if !covered, !folders.contains(folder) { folders.append(folder) }
        }
        return folders
    }
}

/// The uids of process sandboxes on this machine (when the worker is root): each sandbox gets one that no
/// other live sandbox has, recorded in its folder and claimed in a machine-wide registry folder (a file per
/// uid naming the sandbox folder; a claim whose folder is gone is taken over).
enum SandboxUIDs {
    static let registry = "/var/lib/deckhand/sandbox-uids"
    static let base: uid_t = 1_000_000
    static let range: uid_t = 1_000_000_000

    /// The uid of the sandbox in `folder`: the one recorded there, or a new one claimed now.
    static func claim(for folder: String) throws -> uid_t {
        let record = folder + "/uid"
        if let text = try? String(contentsOfFile: record, encoding: .utf8),
            let uid = uid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
        {
            try reserve(uid, for: folder, force: true)
            return uid
        }
        try FileManager.default.createDirectory(atPath: registry, withIntermediateDirectories: true)
        chmod(registry, 0o700)
        for _ in 0..<64 {
            let uid = base + uid_t.random(in: 0..<range)
            if (try? reserve(uid, for: folder, force: false)) != nil {
                try Data("\(uid)\n".utf8).write(to: URL(fileURLWithPath: record), options: .atomic)
                return uid
            }
        }
        throw DeckhandError(.runtimeBackend, "no free sandbox uid could be claimed in \(registry)")
    }

    /// Claims `uid` for `folder`: creates its registry file, or takes it over when the folder it names is gone
    /// (or `force`, for the uid a folder already records).
    static func reserve(_ uid: uid_t, for folder: String, force: Bool) throws {
        try FileManager.default.createDirectory(atPath: registry, withIntermediateDirectories: true)
        let path = registry + "/\(uid)"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd >= 0 {
            defer { close(fd) }
            let bytes = Array(folder.utf8)
            guard write(fd, bytes, bytes.count) == bytes.count else {
                throw DeckhandError(.runtimeBackend, "cannot write \(path)")
            }
            return
        }
        let holder = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        guard holder == folder || force || !FileManager.default.fileExists(atPath: holder) else {
            throw DeckhandError(.runtimeBackend, "uid \(uid) is taken")
        }
        try Data(folder.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Gives the uid of the sandbox in `folder` back.
    static func release(for folder: String) {
        guard let text = try? String(contentsOfFile: folder + "/uid", encoding: .utf8),
            let uid = uid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return }
        let path = registry + "/\(uid)"
        if (try? String(contentsOfFile: path, encoding: .utf8)) == folder { unlink(path) }
    }
}

/// The `/etc` process sandboxes see: a copy of the host's ``ProcessJail/etcEntries`` (what every user may read
/// of them, never a private key) staged once under `<workspace_root>/.system/etc-<fingerprint>` and bound into
/// each sandbox as one read-only folder — one mount where there were thirty, each of which bubblewrap pays for
/// by reading the mount table again. Its `passwd` and `group` are links to `/run/deckhand/`, where each sandbox
/// finds its own accounts. The host's entries are looked at again at most every two seconds, and a change
/// stages a new copy; older copies stay for the sandboxes that still have them mounted.
final class SystemFiles: Sendable {
    let folder: String
    /// How long a staged copy is used without looking at the host's `/etc` again.
    static let recheck: Duration = .seconds(2)
    private let state = Mutex<(staged: String, checked: ContinuousClock.Instant)?>(nil)

    init(root: String) {
        folder = root + "/.system"
    }

    /// The staged `/etc` for the host's entries as they are now.
    func etc() throws -> String {
        let now = ContinuousClock.now
        if let state = state.withLock({ $0 }), now - state.checked < Self.recheck { return state.staged }
        let staged = folder + "/etc-" + String(Self.fingerprint(), radix: 16)
        if !FileManager.default.fileExists(atPath: staged) { try stage(at: staged) }
        state.withLock { $0 = (staged, now) }
        return staged
    }

    /// What is copied: `/etc/<entry>` and what it holds, without anything other users may not read.
    static func walk(_ visit: (_ relative: String, _ status: stat) -> Void) {
        func descend(_ relative: String) {
            var status = stat()
            guard lstat("/etc/" + relative, &status) == 0, Self.copies(relative, status) else { return }
            visit(relative, status)
            guard status.st_mode & S_IFMT == S_IFDIR,
                let names = try? FileManager.default.contentsOfDirectory(atPath: "/etc/" + relative)
            else { return }
            for name in names.sorted() { descend(relative + "/" + name) }
        }
        for entry in ProcessJail.etcEntries { descend(entry) }
    }

    /// Links always; folders and files only when every user may read them, and never a folder named `private`.
    static func copies(_ relative: String, _ status: stat) -> Bool {
        switch status.st_mode & S_IFMT {
        case S_IFLNK: return true
        case S_IFDIR: return status.st_mode & 0o005 == 0o005 && !relative.hasSuffix("/private")
        case S_IFREG: return status.st_mode & 0o004 != 0
        default: return false
        }
    }

    /// FNV-1a over every copied entry's path, type, mode, size and modification time.
    static func fingerprint() -> UInt64 {
        var hash = FNV1a()
        walk { relative, status in
            hash.add(
                "\(relative)\0\(status.st_mode) \(status.st_size) \(status.st_mtim.tv_sec).\(status.st_mtim.tv_nsec)\0"
            )
        }
        return hash.value
    }

    /// Copies `/etc/<relative>` into `folder` (a link as a link, a folder empty, a file readable by all); what
    /// failed, or nil.
    static func copy(_ relative: String, _ status: stat, into folder: String) -> String? {
        let source = "/etc/" + relative
        let copy = folder + "/" + relative
        switch status.st_mode & S_IFMT {
        case S_IFLNK:
            guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: source),
                symlink(link, copy) == 0
            else { return "cannot copy the link \(source)" }
        case S_IFDIR:
            guard mkdir(copy, 0o755) == 0 else { return "cannot make \(copy)" }
        default:
            guard let data = FileManager.default.contents(atPath: source),
                FileManager.default.createFile(atPath: copy, contents: data)
            else { return "cannot copy \(source)" }
            chmod(copy, 0o644)
        }
        return nil
    }

    /// Copies the entries into a new folder beside `target`, then renames it into place (a worker that staged
    /// the same copy first wins; this one's is removed).
    private func stage(at target: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        chmod(folder, 0o755)
        let temporary = target + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        var failures: [String] = []
        Self.walk { relative, status in
            if failures.isEmpty, let failure = Self.copy(relative, status, into: temporary) { failures.append(failure) }
        }
        if let failure = failures.first {
            throw DeckhandError(.runtimeBackend, "staging the sandboxes' /etc: \(failure)")
        }
        for name in ["passwd", "group"] {
            guard symlink(ProcessJail.runInside + "/" + name, temporary + "/" + name) == 0 else {
                throw DeckhandError(.runtimeBackend, "staging the sandboxes' /etc: cannot link \(name)")
            }
        }
        chmod(temporary, 0o755)
        if rename(temporary, target) != 0, !FileManager.default.fileExists(atPath: target) {
            throw DeckhandError(
                .runtimeBackend,
                "cannot stage the sandboxes' /etc at \(target): \(String(cString: strerror(errno)))"
            )
        }
    }
}
