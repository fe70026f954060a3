import DeckhandCore
import Foundation

/// A whole HTTP response: status, headers, body and trailers.
public struct HTTPResponse: Sendable {
    /// The status code, such as 200.
    public var status: Int
    /// The header fields of the final response (not those of any `1xx` interim response).
    public var headers: HTTPHeaders
    /// The body bytes.
    public var body: [UInt8]
    /// Trailer fields sent after the body (HTTP/1.1 chunked trailers, HTTP/2 trailers such as `grpc-status`).
    ///
    /// libcurl 7.88 ends an HTTP/2 response that has a `content-length` at its last byte and never sees trailers
    /// after it; responses without one (gRPC's) deliver them.
    public var trailers: HTTPHeaders

    /// Creates a response.
    public init(status: Int, headers: HTTPHeaders = [:], body: [UInt8] = [], trailers: HTTPHeaders = [:]) {
        self.status = status
        self.headers = headers
        self.body = body
        self.trailers = trailers
    }

    /// Whether the status is in `200..<300`.
    public var isSuccess: Bool { (200..<300).contains(status) }

    /// The body decoded as UTF-8 (invalid sequences replaced).
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// Decodes the body as JSON into `type`.
    ///
    /// Throws `HTTP$DECODING` when the body is not valid JSON of that shape.
    public func decode<T: Decodable>(_ type: T.Type = T.self, decoder: JSONDecoder = JSONDecoder()) throws -> T {
        do {
            return try decoder.decode(type, from: Data(body))
        } catch {
            throw DeckhandError(.httpDecoding, "cannot decode the response body as \(T.self)", underlying: error)
        }
    }

    /// Returns `self` when the status is in `200..<300`, otherwise throws `HTTP$UNEXPECTED_STATUS`.
    @discardableResult
    public func expectSuccess() throws -> HTTPResponse {
        guard isSuccess else {
            throw DeckhandError(.httpUnexpectedStatus, "unexpected HTTP status \(status)")
        }
        return self
    }
}
