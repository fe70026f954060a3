import DeckhandCore
import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOWebSocket
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

extension TestGateway {
    /// How a stream client presents its key.
    public enum StreamAuth: Sendable {
        case header
        case query
        /// `{"type":"auth","api_key":…}` as the first WebSocket frame.
        case firstFrame
        /// This key (or none when empty) in the header.
        case key(String)
    }

    /// Opens `/sockets/events/<conversation>`, sends `frames`, and collects events until `done` says so (then
    /// closes), the gateway closes, or `timeout` passes (an error).
    public func webSocket(
        _ conversation: String,
        latestEventID: Int? = nil,
        auth: StreamAuth = .header,
        frames: [String] = [],
        timeout: Duration = .seconds(60),
        onOpen: @escaping @Sendable () async throws -> Void = {},
        until done: @escaping @Sendable (StreamedEvents) -> Bool
    ) async throws -> StreamedEvents {
        var query: [String] = latestEventID.map { ["latest_event_id=\($0)"] } ?? []
        var headers = HTTPFields()
        var frames = frames
        switch auth {
        case .header: headers[.authorization] = "Bearer \(key)"
        case .query: query.append("api_key=\(key)")
        case .firstFrame:
            let auth: JSONValue = ["type": "auth", "api_key": .string(key)]
            frames.insert(auth.serialized, at: 0)
        case .key(let key): if !key.isEmpty { headers[.authorization] = "Bearer \(key)" }
        }
        let url =
            baseURL.replacingOccurrences(of: "http://", with: "ws://") + "/sockets/events/\(conversation)"
            + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let seen = Mutex(StreamedEvents(events: [], other: []))
        let frames2 = frames
        let fields = headers
        let close = try await withTestTimeout(timeout, "WebSocket \(conversation)") {
            try await WebSocketClient.connect(
                url: url,
                configuration: .init(maxFrameSize: 1 << 24, additionalHeaders: fields),
                logger: Logger(label: "test.websocket")
            ) { inbound, outbound, _ in
                for frame in frames2 { try await outbound.write(.text(frame)) }
                try await onOpen()
                for try await message in inbound.messages(maxSize: 1 << 24) {
                    guard case .text(let text) = message, let value = try? JSONValue(parsing: text) else { continue }
                    let finished = seen.withLock { seen in
                        if value["id"] != nil { seen.events.append(value) } else { seen.other.append(value) }
                        return done(seen)
                    }
                    if finished { return }
                }
            }
        }
        var result = seen.withLock { $0 }
        if let close {
            result.closeCode = Int(UInt16(webSocketErrorCode: close.closeCode))
            result.closeReason = close.reason
        }
        return result
    }
}

/// A WebSocket client that opens the stream and then never reads: the slow client of the buffer tests.
public final class StalledWebSocket: Sendable {
    let descriptor: Int32

    /// Connects to 127.0.0.1:`port`, upgrades `path` with `key`, and reads nothing after the handshake.
    ///
    /// The handshake blocks in `recv` until the gateway answers, so it runs on a thread of its own: on the
    /// cooperative pool (two threads on a two-core machine) two handshakes at once would leave the gateway
    /// in this very process no thread to answer with, and the whole test process would hang.
    public static func open(port: Int, path: String, key: String) async throws -> StalledWebSocket {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try StalledWebSocket(port: port, path: path, key: key) })
            }
            thread.name = "stalled-websocket"
            thread.start()
        }
    }

    private init(port: Int, path: String, key: String) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw DeckhandError(.internalError, "socket() failed: errno \(errno)") }
        var receiveBuffer: Int32 = 4096
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &receiveBuffer, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(descriptor)
            throw DeckhandError(.unavailable, "connect() failed: errno \(errno)")
        }
        let request =
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + "Authorization: Bearer \(key)\r\n\r\n"
        let bytes = Array(request.utf8)
        guard send(descriptor, bytes, bytes.count, 0) == bytes.count else {
            close(descriptor)
            throw DeckhandError(.unavailable, "send() failed: errno \(errno)")
        }
        // The handshake's answer, byte by byte so that nothing after it is read.
        var head: [UInt8] = []
        var byte: UInt8 = 0
        while !head.suffix(4).elementsEqual(Array("\r\n\r\n".utf8)) {
            guard recv(descriptor, &byte, 1, 0) == 1 else {
                close(descriptor)
                throw DeckhandError(
                    .protocolViolation,
                    "the handshake ended early: \(String(decoding: head, as: UTF8.self))"
                )
            }
            head.append(byte)
        }
        guard String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 101") else {
            close(descriptor)
            throw DeckhandError(.protocolViolation, "not upgraded: \(String(decoding: head, as: UTF8.self))")
        }
    }

    deinit { close(descriptor) }
}
