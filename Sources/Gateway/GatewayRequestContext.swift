import DeckhandStore
import Hummingbird
import HummingbirdWebSocket
import Logging

/// The request context of every gateway route: Hummingbird's core storage, the WebSocket upgrade hook and
/// the principal the authentication middleware found.
public struct GatewayRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<Self>
    /// Set by ``GatewayMiddleware`` from the request's key (nil on the open routes, and on a stream whose
    /// client authenticates with its first frame).
    public var principal: Principal?
    /// The client's IP address (the per-address limit of wrong keys).
    public let clientAddress: String?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
        self.clientAddress = source.channel.remoteAddress?.ipAddress
    }

    /// The principal, or a 401 when the request has none.
    func requirePrincipal() throws -> Principal {
        guard let principal else { throw APIError.unauthorized }
        return principal
    }
}
