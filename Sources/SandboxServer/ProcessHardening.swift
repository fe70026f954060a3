import CSandboxPTY
import DeckhandCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What the sandbox server does to itself before it starts the agent's shell, so that the shell (which runs
/// untrusted commands, often as the same user) cannot take the server's key or outgrow the sandbox.
public enum ProcessHardening {
    /// Makes the server non-dumpable: a process of the same user can no longer read its environment, memory or
    /// descriptors through `/proc`, nor trace it. The shell it starts is dumpable again (exec resets it), which
    /// is harmless: the shell holds no secret of the platform.
    public static func protectMemory() throws {
        let result = deckhand_make_undumpable()
        guard result == 0 else {
            throw DeckhandError(.invalidConfiguration, "prctl(PR_SET_DUMPABLE): \(String(cString: strerror(-result)))")
        }
    }

    /// Caps the processes of the server's user (`RLIMIT_NPROC`): with one user per sandbox, a fork bomb in the
    /// shell stops at `limit` instead of taking the host's process table.
    public static func limitProcesses(_ limit: Int) throws {
        let result = deckhand_limit_processes(UInt(limit))
        guard result == 0 else {
            throw DeckhandError(
                .invalidConfiguration,
                "setrlimit(RLIMIT_NPROC, \(limit)): \(String(cString: strerror(-result)))"
            )
        }
    }

    /// Drops this process to `user` (a name in `/etc/passwd`, or a uid): no supplementary groups, its group,
    /// its uid; `HOME`, `USER` and `LOGNAME` follow, so the shell started later is that user's. After it the
    /// process holds no capability and is non-dumpable (the kernel resets that on the uid change).
    public static func drop(to user: String) throws {
        guard let entry = getpwnam(user) ?? UInt32(user).flatMap({ getpwuid($0) }) else {
            throw DeckhandError(.invalidConfiguration, "--run-as: no user \(user) in /etc/passwd")
        }
        let uid = entry.pointee.pw_uid
        let gid = entry.pointee.pw_gid
        let home = String(cString: entry.pointee.pw_dir)
        let name = String(cString: entry.pointee.pw_name)
        guard setgroups(0, nil) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
            throw DeckhandError(
                .invalidConfiguration,
                "--run-as \(user): cannot become uid \(uid): \(String(cString: strerror(errno)))"
            )
        }
        // Not undone: a process that could regain root would make the drop pointless.
        guard setuid(0) != 0 else {
            throw DeckhandError(.invalidConfiguration, "--run-as \(user): root could be regained after the drop")
        }
        setenv("HOME", home, 1)
        setenv("USER", name, 1)
        setenv("LOGNAME", name, 1)
        try protectMemory()
    }

    /// Reads the session key from `path` and removes the file, so nothing started later in the sandbox can
    /// read it there. Surrounding whitespace is dropped.
    public static func takeSessionKey(from path: String) throws -> String {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw DeckhandError(.invalidConfiguration, "cannot read the session key file \(path)", underlying: error)
        }
        guard unlink(path) == 0 else {
            throw DeckhandError(
                .invalidConfiguration,
                "cannot remove the session key file \(path) after reading it: \(String(cString: strerror(errno)))"
            )
        }
        let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !key.isEmpty else {
            throw DeckhandError(.invalidConfiguration, "the session key file \(path) is empty")
        }
        return key
    }
}
