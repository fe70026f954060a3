import DeckhandCore

#if canImport(Glibc)
import Glibc
#endif

/// Wakes a thread that sleeps in `poll`: the thread polls ``readDescriptor`` beside its own sockets, and any
/// other thread calls ``wake()``. Non-blocking and close-on-exec at both ends, so a full pipe never blocks a
/// waker and no child process inherits it. (`eventfd` and `pipe2` are not visible through Glibc's module:
/// CLIBS.md pitfall 11.)
public final class WakePipe: Sendable {
    /// The end to poll for `POLLIN`.
    public let readDescriptor: Int32
    private let writeDescriptor: Int32

    public init() throws(DeckhandError) {
        var descriptors: [Int32] = [-1, -1]
        guard pipe(&descriptors) == 0 else {
            throw DeckhandError(.internalError, "cannot create a wake-up pipe: \(String(cString: strerror(errno)))")
        }
        for descriptor in descriptors {
            _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        }
        readDescriptor = descriptors[0]
        writeDescriptor = descriptors[1]
    }

    deinit {
        close(readDescriptor)
        close(writeDescriptor)
    }

    /// Makes the read end readable (a full pipe is already readable, so a failed write loses nothing).
    public func wake() {
        var byte: UInt8 = 1
        _ = write(writeDescriptor, &byte, 1)
    }

    /// Empties the pipe after `poll` reported it (the sleeper's side).
    public func drain() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(readDescriptor, &buffer, buffer.count) > 0 {}
    }

    /// A `pollfd` for the read end.
    public var pollDescriptor: pollfd { pollfd(fd: readDescriptor, events: Int16(POLLIN), revents: 0) }
}
