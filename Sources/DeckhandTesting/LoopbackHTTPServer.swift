import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// A real HTTP/1.1 server on 127.0.0.1 with an ephemeral port, for HTTP client tests and benchmarks.
///
/// Routes:
/// - `GET /hello` — `Hello, world!` as text (and `HEAD /hello`).
/// - `/echo` (GET, POST, PUT, PATCH, DELETE) — a JSON ``LoopbackHTTPServer/Echo`` of the method, body and headers.
/// - `GET /slow?ms=N` — `slow` after N milliseconds.
/// - `GET /sse?count=N&interval_ms=M` — a `text/event-stream` of N events (`id: 1…N`, `event: tick`,
///   `data: event <i>`), M milliseconds apart, then the end of the response.
/// - `GET /trailers` — a chunked text body followed by the trailers `grpc-status: 0` and `x-checksum: abc`.
/// - `GET /status/{code}` — an empty response with that status.
public enum LoopbackHTTPServer {
    /// What `/echo` answers.
    public struct Echo: Codable, Sendable, Equatable {
        /// The request method.
        public var method: String
        /// The request body as UTF-8 text.
        public var body: String
        /// The request headers, names lowercased; repeated fields joined with `, `.
        public var headers: [String: String]
    }

    /// Starts the server, runs `body` with its port, and stops the server when `body` returns or throws.
    public static func withLoopbackServer<T: Sendable>(
        _ body: @Sendable (_ port: Int) async throws -> T
    ) async throws -> T {
        try await serve(makeRouter(), body)
    }

    /// Serves `router` on `host` (127.0.0.1, or the host's own address on a Docker network a test made) at a
    /// port the kernel picks, runs `body` with that port, and stops the server when `body` returns or throws.
    public static func serve<T: Sendable>(
        _ router: Router<BasicRequestContext>,
        host: String = "127.0.0.1",
        _ body: @Sendable (_ port: Int) async throws -> T
    ) async throws -> T {
        var logger = Logger(label: "deckhand.testing.loopback-http")
        logger.logLevel = .warning
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: 0), serverName: nil),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            },
            logger: logger
        )
        let serviceGroup = ServiceGroup(
            configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger)
        )
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await serviceGroup.run()
            }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next(), port > 0 else {
                group.cancelAll()
                throw LoopbackServerError(message: "the loopback HTTP server did not start")
            }
            let result: Result<T, any Error>
            do {
                result = .success(try await body(port))
            } catch {
                result = .failure(error)
            }
            // Graceful shutdown finishes requests in flight; past five seconds, cancel.
            await serviceGroup.triggerGracefulShutdown()
            group.addTask { try await Task.sleep(for: .seconds(5)) }
            _ = try? await group.next()
            group.cancelAll()
            return try result.get()
        }
    }

    /// The router with every test route.
    static func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("hello") { _, _ in
            "Hello, world!"
        }
        router.head("hello") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"])
        }
        for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] {
            router.on("echo", method: method) { request, _ -> Response in
                let bytes = try await request.body.collect(upTo: 16 << 20)
                var headers: [String: String] = [:]
                for field in request.headers {
                    let name = field.name.canonicalName
                    headers[name] = headers[name].map { $0 + ", " + field.value } ?? field.value
                }
                let echo = Echo(
                    method: request.method.rawValue,
                    body: String(buffer: bytes),
                    headers: headers
                )
                let json = try JSONEncoder().encode(echo)
                return Response(
                    status: .ok,
                    headers: [.contentType: "application/json"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: json))
                )
            }
        }
        router.get("slow") { request, _ -> String in
            let milliseconds = Int(request.uri.queryParameters["ms"].map(String.init) ?? "") ?? 1000
            // A stopping server does not wait for sleepers whose client may be gone.
            try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(milliseconds)) }
            return "slow"
        }
        router.get("sse") { request, _ -> Response in
            let count = Int(request.uri.queryParameters["count"].map(String.init) ?? "") ?? 3
            let interval = Int(request.uri.queryParameters["interval_ms"].map(String.init) ?? "") ?? 10
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: ": stream start\n\n"))
                    for index in 1...max(count, 1) where count > 0 {
                        if index > 1 {
                            try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(interval)) }
                        }
                        let event = "id: \(index)\nevent: tick\ndata: event \(index)\n\n"
                        try await writer.write(ByteBuffer(string: event))
                    }
                    try await writer.finish(nil)
                }
            )
        }
        router.get("trailers") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; charset=utf-8"],
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: "body before trailers"))
                    var trailers = HTTPFields()
                    trailers[HTTPField.Name("grpc-status")!] = "0"
                    trailers[HTTPField.Name("x-checksum")!] = "abc"
                    try await writer.finish(trailers)
                }
            )
        }
        router.get("status/:code") { _, context -> Response in
            let code = try context.parameters.require("code", as: Int.self)
            return Response(status: .init(code: code))
        }
        return router
    }
}

/// The loopback server failed to start.
public struct LoopbackServerError: Error, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    public var description: String { message }
}

/// Starts the loopback HTTP server for the length of `body` (see ``LoopbackHTTPServer``).
public func withLoopbackServer<T: Sendable>(_ body: @Sendable (_ port: Int) async throws -> T) async throws -> T {
    try await LoopbackHTTPServer.withLoopbackServer(body)
}
