import DeckhandCore
import Foundation
import Synchronization

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
    /// closes), the gateway closes, or `timeout` passes (an error). A refused upgrade is an error too.
    public func webSocket(
        _ conversation: String,
        latestEventID: Int? = nil,
        auth: StreamAuth = .header,
        frames: [String] = [],
        timeout: Duration = .seconds(60),
        until done: @escaping @Sendable (StreamedEvents) -> Bool
    ) async throws -> StreamedEvents {
        var query: [String] = latestEventID.map { ["latest_event_id=\($0)"] } ?? []
        var headers: [(String, String)] = []
        var frames = frames
        switch auth {
        case .header: headers.append(("Authorization", "Bearer \(key)"))
        case .query: query.append("api_key=\(key)")
        case .firstFrame:
            let auth: JSONValue = ["type": "auth", "api_key": .string(key)]
            frames.insert(auth.serialized, at: 0)
        case .key(let key): if !key.isEmpty { headers.append(("Authorization", "Bearer \(key)")) }
        }
        let path = "/sockets/events/\(conversation)" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let port = try self.port
        let (sending, fields) = (frames, headers)
        let open = Mutex<WireWebSocket?>(nil)
        let cancelled = Mutex(false)
        return try await withTestTimeout(timeout, "WebSocket \(conversation)") {
            try await withTaskCancellationHandler {
                try await onThread("test-websocket") { () throws -> StreamedEvents in
                    let socket = try WireWebSocket.connect(port: port, path: path, headers: fields)
                    open.withLock { $0 = socket }
                    if cancelled.withLock({ $0 }) { socket.shutDown() }
                    defer { socket.shutDown() }
                    for frame in sending { try socket.send(text: frame) }
                    var seen = StreamedEvents(events: [], other: [])
                    while let frame = try socket.next() {
                        switch frame {
                        case .text(let text):
                            guard let value = try? JSONValue(parsing: text) else { continue }
                            if value["id"] != nil { seen.events.append(value) } else { seen.other.append(value) }
                            if done(seen) {
                                try? socket.sendClose(code: 1000)
                                return seen
                            }
                        case .binary:
                            continue
                        case .close(let code, let reason):
                            seen.closeCode = code
                            seen.closeReason = reason
                            return seen
                        }
                    }
                    return seen
                }
            } onCancel: {
                cancelled.withLock { $0 = true }
                open.withLock { $0 }?.shutDown()
            }
        }
    }

    /// The gateway's port on 127.0.0.1.
    var port: Int {
        get throws {
            guard let port = Int(baseURL.split(separator: ":").last ?? "") else {
                throw DeckhandError(.internalError, "no port in the gateway's URL \(baseURL)")
            }
            return port
        }
    }
}

/// A WebSocket client that opens the stream and then never reads: the slow client of the buffer tests.
public final class StalledWebSocket: Sendable {
    private let socket: WireWebSocket

    /// Connects to 127.0.0.1:`port`, upgrades `path` with `key`, and reads nothing after the handshake.
    public static func open(port: Int, path: String, key: String) async throws -> StalledWebSocket {
        StalledWebSocket(
            socket: try await onThread("stalled-websocket") {
                try WireWebSocket.connect(
                    port: port,
                    path: path,
                    headers: [("Authorization", "Bearer \(key)")],
                    receiveBuffer: 4096
                )
            }
        )
    }

    private init(socket: WireWebSocket) { self.socket = socket }
}

/// Runs `body`, which blocks, on a thread of its own: on the cooperative pool (two threads on a two-core
/// machine) two blocking socket calls at once would leave the gateway in this very process no thread to answer
/// with, and the whole test process would hang.
func onThread<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.name = name
        thread.start()
    }
}
