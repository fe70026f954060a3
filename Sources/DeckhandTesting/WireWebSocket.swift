import Crypto
import DeckhandCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A WebSocket client on a plain TCP socket (RFC 6455, text frames), for tests of the gateway's event socket.
///
/// It keeps every byte that arrives with the `101` answer: a server that speaks first (the replay, or a close
/// frame refusing the stream) often sends its first frame in the same read as the handshake's answer, and the
/// NIO-based client the tests used before lost such bytes under load — and with them the close it waited for.
/// Calls block: run them on a thread of their own (``TestGateway/webSocket(_:latestEventID:auth:frames:timeout:until:)``
/// and ``StalledWebSocket`` do).
final class WireWebSocket: @unchecked Sendable {
    /// One frame from the server.
    enum Frame: Equatable {
        case text(String)
        case binary([UInt8])
        case close(code: Int?, reason: String)
    }

    let descriptor: Int32
    /// Bytes read and not yet parsed (the first ones came with the handshake's answer).
    private var buffer: [UInt8]
    private let lock = NSLock()
    private var shut = false

    private init(descriptor: Int32, leftover: [UInt8]) {
        self.descriptor = descriptor
        self.buffer = leftover
    }

    deinit { close(descriptor) }

    /// Connects to 127.0.0.1:`port` and upgrades `path`, sending `headers` with the handshake; throws when the
    /// server answers anything but `101` with the right `Sec-WebSocket-Accept`. `receiveBuffer` shrinks the
    /// socket's receive buffer (a client that will read nothing).
    static func connect(
        port: Int,
        path: String,
        headers: [(String, String)],
        receiveBuffer: Int32? = nil
    ) throws -> WireWebSocket {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw DeckhandError(.internalError, "socket() failed: errno \(errno)") }
        if var size = receiveBuffer {
            setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            let failure = errno
            close(descriptor)
            throw DeckhandError(.unavailable, "connect() to 127.0.0.1:\(port) failed: errno \(failure)")
        }
        let key = Data((0..<16).map { _ in UInt8.random(in: .min ... .max) }).base64EncodedString()
        var request =
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        let socket = WireWebSocket(descriptor: descriptor, leftover: [])
        try socket.write(Array(request.utf8))
        // The answer's head; what follows it stays in the buffer for the frames.
        var end: Int?
        while end == nil {
            guard try socket.fill() else {
                throw DeckhandError(
                    .protocolViolation,
                    "the handshake ended early: \(String(decoding: socket.buffer, as: UTF8.self))"
                )
            }
            end = socket.buffer.indices.dropLast(3).first { index in
                socket.buffer[index..<index + 4].elementsEqual([13, 10, 13, 10])
            }
        }
        let head = String(decoding: socket.buffer[..<end!], as: UTF8.self)
        socket.buffer.removeFirst(end! + 4)
        let lines = head.components(separatedBy: "\r\n")
        guard lines.first?.hasPrefix("HTTP/1.1 101") == true else {
            throw DeckhandError(.protocolViolation, "not upgraded: \(lines.first ?? head)")
        }
        let accept = lines.dropFirst().first { $0.lowercased().hasPrefix("sec-websocket-accept:") }
            .map { $0.drop { $0 != ":" }.dropFirst().trimmingCharacters(in: .whitespaces) }
        let expected = Data(Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
            .base64EncodedString()
        guard accept == expected else {
            throw DeckhandError(.protocolViolation, "wrong Sec-WebSocket-Accept: \(accept ?? "none")")
        }
        return socket
    }

    /// Sends a text frame (masked, as a client must).
    func send(text: String) throws { try write(Self.frame(opcode: 0x1, payload: Array(text.utf8))) }

    /// Sends a close frame with `code`.
    func sendClose(code: Int) throws {
        try write(Self.frame(opcode: 0x8, payload: [UInt8(code >> 8), UInt8(code & 0xFF)]))
    }

    /// The next text, binary or close frame (answering pings on the way); nil when the connection ended
    /// without a close frame.
    func next() throws -> Frame? {
        var message: [UInt8] = []
        var messageOpcode: UInt8 = 0
        while true {
            guard let header = try take(2) else { return nil }
            let fin = header[0] & 0x80 != 0
            let opcode = header[0] & 0x0F
            var length = Int(header[1] & 0x7F)
            if length == 126 {
                guard let extended = try take(2) else { return nil }
                length = Int(extended[0]) << 8 | Int(extended[1])
            } else if length == 127 {
                guard let extended = try take(8) else { return nil }
                length = extended.reduce(0) { $0 << 8 | Int($1) }
            }
            let mask = header[1] & 0x80 != 0 ? try take(4) : nil
            guard var payload = try take(length) else { return nil }
            if let mask { for index in payload.indices { payload[index] ^= mask[index % 4] } }
            switch opcode {
            case 0x8:
                let code = payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : nil
                let reason = String(decoding: payload.dropFirst(2), as: UTF8.self)
                try? sendClose(code: code ?? 1000)
                return .close(code: code, reason: reason)
            case 0x9:
                try write(Self.frame(opcode: 0xA, payload: payload))
            case 0xA:
                continue
            default:
                if opcode != 0 { messageOpcode = opcode }
                message += payload
                guard fin else { continue }
                return messageOpcode == 0x1 ? .text(String(decoding: message, as: UTF8.self)) : .binary(message)
            }
        }
    }

    /// Ends the connection at once; a blocked ``next()`` returns nil.
    func shutDown() {
        lock.withLock {
            guard !shut else { return }
            shut = true
            shutdown(descriptor, Int32(SHUT_RDWR))
        }
    }

    // MARK: Bytes

    private static func frame(opcode: UInt8, payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [0x80 | opcode]
        switch payload.count {
        case ..<126: bytes.append(0x80 | UInt8(payload.count))
        case ..<65536: bytes += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default: bytes += [0x80 | 127] + (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: .min ... .max) }
        bytes += mask
        bytes += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        return bytes
    }

    private func write(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw DeckhandError(.unavailable, "send() failed: errno \(errno)") }
            sent += count
        }
    }

    /// Reads what the socket has into the buffer; false at the end of the stream.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = recv(descriptor, &chunk, chunk.count, 0)
            if count < 0, errno == EINTR { continue }
            if count <= 0 { return false }
            buffer += chunk[..<count]
            return true
        }
    }

    /// The next `count` bytes, or nil when the stream ends first.
    private func take(_ count: Int) throws -> [UInt8]? {
        while buffer.count < count {
            guard try fill() else { return nil }
        }
        let bytes = Array(buffer[..<count])
        buffer.removeFirst(count)
        return bytes
    }
}
