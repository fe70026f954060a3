import DeckhandCore
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A TCP forwarder on 127.0.0.1 for fault injection: tests connect through it and then cut the connection
/// (``sever()``) to simulate an outage of one service for one client only, leaving the service — and every
/// other test using it — untouched.
public final class TCPProxy: Sendable {
    /// The loopback port to connect to instead of the target's.
    public let port: Int
    private let listener: Int32
    private let targetHost: String
    private let targetPort: Int
    private let state = Mutex(State())

    private struct State {
        var connections: Set<Int32> = []
        var refusing = false
        var stopped = false
    }

    private init(listener: Int32, port: Int, targetHost: String, targetPort: Int) {
        self.listener = listener
        self.port = port
        self.targetHost = targetHost
        self.targetPort = targetPort
    }

    /// A proxy in front of the server of a `scheme://…@host:port/…` URL on this machine (a test bed's
    /// PostgreSQL), and the URL pointed at it: cut the proxy to take the server away from whoever connects
    /// through it.
    public static func inFront(of url: String) throws -> (proxy: TCPProxy, url: String) {
        guard let match = url.firstRange(of: /:(\d+)\//), let port = Int(url[match].dropFirst().dropLast()) else {
            throw DeckhandError(.invalidConfiguration, "no :port/ in the URL to put a proxy in front of")
        }
        let proxy = try start(targetHost: "127.0.0.1", targetPort: port)
        return (proxy, url.replacingCharacters(in: match, with: ":\(proxy.port)/"))
    }

    /// Starts forwarding an ephemeral port on 127.0.0.1 to `targetHost`:`targetPort`.
    public static func start(targetHost: String, targetPort: Int) throws -> TCPProxy {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw DeckhandError(.internalError, "socket() failed: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) }
        }
        guard bound == 0, listen(listener, 128) == 0 else {
            close(listener)
            throw DeckhandError(.internalError, "bind/listen failed: errno \(errno)")
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        let proxy = TCPProxy(
            listener: listener,
            port: Int(UInt16(bigEndian: address.sin_port)),
            targetHost: targetHost,
            targetPort: targetPort
        )
        let thread = Thread { proxy.acceptLoop() }
        thread.name = "tcp-proxy-accept"
        thread.start()
        return proxy
    }

    deinit {
        close(listener)
    }

    /// Cuts every forwarded connection and refuses new ones until ``restore()``.
    public func sever() {
        let open = state.withLock { state in
            state.refusing = true
            return state.connections
        }
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Accepts and forwards connections again.
    public func restore() {
        state.withLock { $0.refusing = false }
    }

    /// Stops the proxy and cuts everything.
    public func stop() {
        sever()
        state.withLock { $0.stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if state.withLock({ $0.stopped }) { return }
                if errno == EINTR { continue }
                return
            }
            let (refusing, stopped) = state.withLock { ($0.refusing, $0.stopped) }
            if stopped {
                close(client)
                return
            }
            if refusing {
                close(client)
                continue
            }
            guard let upstream = connectToTarget() else {
                close(client)
                continue
            }
            // Admitted only if no sever() came while the target was being reached: sever() cuts the connections
            // it finds, and one not yet recorded would otherwise outlive it and forward through the outage: a
            // pool opening a connection just then kept a way to its database while the test took it for cut.
            let admitted = state.withLock { state -> Bool in
                guard !state.refusing, !state.stopped else { return false }
                state.connections.insert(client)
                state.connections.insert(upstream)
                return true
            }
            guard admitted else {
                close(upstream)
                close(client)
                continue
            }
            let thread = Thread { [self] in pump(client, upstream) }
            thread.name = "tcp-proxy-pump"
            thread.start()
        }
    }

    private func connectToTarget() -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(targetHost == "localhost" ? "127.0.0.1" : targetHost)
        address.sin_port = UInt16(targetPort).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    private func pump(_ a: Int32, _ b: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
        loop: while true {
            guard poll(&fds, 2, -1) > 0 else {
                if errno == EINTR { continue }
                break
            }
            for (index, entry) in fds.enumerated() where entry.revents != 0 {
                let from = entry.fd
                let to = index == 0 ? b : a
                let count = read(from, &buffer, buffer.count)
                if count <= 0 { break loop }
                var written = 0
                while written < count {
                    // MSG_NOSIGNAL: a peer cut by sever() must give EPIPE here, not SIGPIPE to the test process.
                    let result = buffer.withUnsafeBytes {
                        send(to, $0.baseAddress! + written, count - written, Int32(MSG_NOSIGNAL))
                    }
                    if result <= 0 { break loop }
                    written += result
                }
            }
        }
        state.withLock {
            $0.connections.remove(a)
            $0.connections.remove(b)
        }
        close(a)
        close(b)
    }
}

extension TestEnvironment {
    /// A port of 127.0.0.1 that is free now and lies below the kernel's ephemeral range (32768+), for a server
    /// a test starts itself on a fixed port. Outside that range no outgoing connection takes it as its
    /// source port (and a client cannot connect to itself through it), so it stays free until the test binds it.
    public static func freePort() throws -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: 20_000..<32_000)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if bound == 0 { return port }
        }
        throw DeckhandError(.internalError, "no free port found below 32000")
    }
}
