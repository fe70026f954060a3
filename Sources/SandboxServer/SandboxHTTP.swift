import DeckhandCore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// JSON responses in the shapes OpenHands' action-execution server uses (FastAPI's `{"detail": …}` errors).
enum SandboxHTTP {
    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONEncoder.sandbox.encode(value)) ?? Data("null".utf8)
        return Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data))
        )
    }

    static func detail(_ message: String, status: HTTPResponse.Status) -> Response {
        json(["detail": .string(message)], status: status)
    }
}

extension JSONEncoder {
    /// Sorted keys, no escaped slashes: stable output for clients and tests.
    static var sandbox: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

/// Rejects every request without the session key, except the open routes (`/alive`, `/server_info`).
struct SessionKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: String?
    let openPaths: Set<String> = ["/alive", "/server_info"]
    let activity: ActivityClock

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws
        -> Response
    {
        if openPaths.contains(request.uri.path) {
            return try await next(request, context)
        }
        if let key {
            let given = request.headers[HTTPField.Name("X-Session-API-Key")!] ?? ""
            guard constantTimeEquals(Array(given.utf8), Array(key.utf8)) else {
                return SandboxHTTP.detail("Invalid API Key", status: .forbidden)
            }
        }
        activity.touch()
        return try await next(request, context)
    }
}
