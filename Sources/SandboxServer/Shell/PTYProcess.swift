import CSandboxPTY
import DeckhandCore
import DeckhandPOSIX
import Foundation
import Glibc
import Synchronization

/// A program on a pseudo-terminal, with one OS thread that reads the master side as output arrives.
///
/// The thread sleeps in `poll()` on the master and a wake-up pipe. It appends output to a buffer and resumes
/// the one waiting caller at once (or when the caller's deadline passes), so nothing ever sleep-polls and no
/// blocking call runs on Swift's cooperative pool. File descriptors are closed when the object goes away,
/// which is after the thread has ended (the thread holds a reference while it runs).
final class PTYProcess: Sendable {
    let pid: pid_t
    private let master: Int32
    private let wakePipe: WakePipe
    private let state: Mutex<State>

    private struct Waiter {
        var continuation: CheckedContinuation<Void, Never>
        var deadline: ContinuousClock.Instant?
    }

    private struct State {
        var pending: [UInt8] = []
        var lastOutput: ContinuousClock.Instant
        /// The slave side is closed: every process holding it (the shell first) has gone.
        var hungUp = false
        var stopping = false
        var waiter: Waiter?
        var exitStatus: Int32?
    }

    private init(pid: pid_t, master: Int32, wakePipe: WakePipe) {
        self.pid = pid
        self.master = master
        self.wakePipe = wakePipe
        self.state = Mutex(State(lastOutput: .now))
    }

    deinit {
        close(master)
    }

    /// Starts `path` on a new terminal (no echo, plain `\n` output) and its reader thread.
    static func spawn(
        path: String,
        arguments: [String],
        environment: [String: String],
        directory: String,
        user: (uid: Int, gid: Int)?,
        columns: UInt16 = 1000,
        rows: UInt16 = 50
    ) throws -> PTYProcess {
        let wakePipe = try WakePipe()
        var master: Int32 = -1
        var pid: pid_t = 0
        let result = withCStringArray([path] + arguments) { argv in
            withCStringArray(environment.map { "\($0.key)=\($0.value)" }) { envp in
                deckhand_spawn_pty(
                    path,
                    argv,
                    envp,
                    directory,
                    rows,
                    columns,
                    Int32(user?.uid ?? -1),
                    Int32(user?.gid ?? -1),
                    1,
                    &master,
                    &pid
                )
            }
        }
        guard result == 0 else {
            throw DeckhandError(.shellUnavailable, "cannot start \(path): \(String(cString: strerror(-result)))")
        }
        _ = fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK)
        _ = fcntl(master, F_SETFD, FD_CLOEXEC)
        let process = PTYProcess(pid: pid, master: master, wakePipe: wakePipe)
        let thread = Thread { process.readLoop() }
        thread.name = "deckhand-pty-\(pid)"
        thread.start()
        return process
    }

    // MARK: - Caller side

    /// Takes the output read since the last call.
    func takeOutput() -> [UInt8] {
        state.withLock { state in
            defer { state.pending.removeAll(keepingCapacity: true) }
            return state.pending
        }
    }

    /// When output last arrived.
    var lastOutput: ContinuousClock.Instant { state.withLock { $0.lastOutput } }

    /// Whether the terminal has hung up (the shell and everything holding the terminal have gone).
    var hasHungUp: Bool { state.withLock { $0.hungUp } }

    /// Returns when output is waiting, the terminal hangs up, `deadline` passes, or the task is cancelled.
    func waitForOutput(until deadline: ContinuousClock.Instant?) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = ContinuousClock.now
                let ready = state.withLock { state -> Bool in
                    if !state.pending.isEmpty || state.hungUp || state.stopping || Task.isCancelled { return true }
                    if let deadline, deadline <= now { return true }
                    state.waiter = Waiter(continuation: continuation, deadline: deadline)
                    return false
                }
                if ready {
                    continuation.resume()
                } else if deadline != nil {
                    wake()  // the thread recomputes its poll() timeout
                }
            }
        } onCancel: {
            state.withLock { $0.waiter.take() }?.continuation.resume()
        }
    }

    /// Writes all of `bytes` to the terminal, waiting briefly (bounded) while its input queue is full.
    func write(_ bytes: [UInt8]) throws {
        var offset = 0
        var stalls = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(master, $0.baseAddress, $0.count) }
            if written > 0 {
                offset += written
                stalls = 0
                continue
            }
            let error = errno
            if written < 0 && error == EINTR { continue }
            guard written < 0 && error == EAGAIN, stalls < 200 else {
                throw DeckhandError(
                    .shellUnavailable,
                    "cannot write to the shell's terminal: \(String(cString: strerror(error)))"
                )
            }
            stalls += 1
            var descriptor = pollfd(fd: master, events: Int16(POLLOUT), revents: 0)
            _ = poll(&descriptor, 1, 10)
        }
    }

    /// The foreground process group of the terminal (the running job, or the shell itself), if known.
    var foregroundProcessGroup: pid_t? {
        let group = tcgetpgrp(master)
        return group > 0 ? group : nil
    }

    /// Reaps the shell without blocking; its exit status (as a shell reports it) once it has exited.
    func reap() -> Int32? {
        if let status = state.withLock({ $0.exitStatus }) { return status }
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        guard result == pid else { return result < 0 && errno == ECHILD ? -1 : nil }
        let code = Self.exitCode(status)
        state.withLock { $0.exitStatus = code }
        return code
    }

    /// Ends the shell and everything in its session's process groups: SIGHUP (which an interactive bash
    /// passes on to its jobs) and SIGTERM, then SIGKILL after `grace`; then stops the reader thread.
    func terminate(grace: Duration = .milliseconds(300)) async {
        let groups = Set([pid] + (foregroundProcessGroup.map { [$0] } ?? []))
        if reap() == nil {
            for group in groups {
                kill(-group, SIGHUP)
                kill(-group, SIGCONT)
                kill(-group, SIGTERM)
            }
            let deadline = ContinuousClock.now + grace
            while reap() == nil && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(10))
            }
            for group in groups { kill(-group, SIGKILL) }
            while reap() == nil {
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        state.withLock { $0.stopping = true }
        wake()
    }

    private static func exitCode(_ status: Int32) -> Int32 {
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    private func wake() {
        wakePipe.wake()
    }

    // MARK: - Reader thread

    private func readLoop() {
        var descriptors = [
            pollfd(fd: master, events: Int16(POLLIN), revents: 0),
            wakePipe.pollDescriptor,
        ]
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let (stopping, deadline) = state.withLock { ($0.stopping, $0.waiter?.deadline) }
            if stopping { break }
            var timeout: Int32 = -1
            if let deadline {
                // One more millisecond, so the wake-up falls after the deadline, not just before it.
                timeout = max(0, ContinuousClock.now.duration(to: deadline).pollMilliseconds + 1)
            }
            descriptors[0].revents = 0
            descriptors[1].revents = 0
            let ready = poll(&descriptors, 2, timeout)
            if ready < 0 && errno != EINTR { break }
            if descriptors[1].revents != 0 { wakePipe.drain() }
            var received: [UInt8] = []
            var hungUp = false
            if descriptors[0].revents != 0 {
                while true {
                    let count = read(master, &buffer, buffer.count)
                    if count > 0 {
                        received.append(contentsOf: buffer[0..<count])
                        if received.count >= 1 << 20 { break }
                        continue
                    }
                    if count < 0 && errno == EINTR { continue }
                    if count < 0 && errno == EAGAIN { break }
                    hungUp = true  // EIO (or end of file): nothing holds the terminal any more
                    break
                }
                if hungUp { descriptors[0].fd = -1 }
            }
            let now = ContinuousClock.now
            let waiter = state.withLock { state -> Waiter? in
                if !received.isEmpty {
                    state.pending.append(contentsOf: received)
                    state.lastOutput = now
                }
                if hungUp { state.hungUp = true }
                if !received.isEmpty || hungUp { return state.waiter.take() }
                if let deadline = state.waiter?.deadline, deadline <= now { return state.waiter.take() }
                return nil
            }
            waiter?.continuation.resume()
        }
        state.withLock { $0.waiter.take() }?.continuation.resume()
    }
}
