import DeckhandCore
import Foundation
import HTTPClient

/// How a gRPC call ended: its status code, the server's message (percent-decoded) and the raw
/// `grpc-status-details-bin`, with the trailing metadata (warnings ride there).
public struct GRPCStatus: Error, Sendable, CustomStringConvertible {
    /// gRPC's status codes.
    public enum Code: Int, Sendable, CaseIterable {
        case ok = 0
        case cancelled = 1
        case unknown = 2
        case invalidArgument = 3
        case deadlineExceeded = 4
        case notFound = 5
        case alreadyExists = 6
        case permissionDenied = 7
        case resourceExhausted = 8
        case failedPrecondition = 9
        case aborted = 10
        case outOfRange = 11
        case unimplemented = 12
        case `internal` = 13
        case unavailable = 14
        case dataLoss = 15
        case unauthenticated = 16

        /// The name gRPC gives the code (`NOT_FOUND`).
        public var name: String {
            switch self {
            case .ok: "OK"
            case .cancelled: "CANCELLED"
            case .unknown: "UNKNOWN"
            case .invalidArgument: "INVALID_ARGUMENT"
            case .deadlineExceeded: "DEADLINE_EXCEEDED"
            case .notFound: "NOT_FOUND"
            case .alreadyExists: "ALREADY_EXISTS"
            case .permissionDenied: "PERMISSION_DENIED"
            case .resourceExhausted: "RESOURCE_EXHAUSTED"
            case .failedPrecondition: "FAILED_PRECONDITION"
            case .aborted: "ABORTED"
            case .outOfRange: "OUT_OF_RANGE"
            case .unimplemented: "UNIMPLEMENTED"
            case .internal: "INTERNAL"
            case .unavailable: "UNAVAILABLE"
            case .dataLoss: "DATA_LOSS"
            case .unauthenticated: "UNAUTHENTICATED"
            }
        }
    }

    public var code: Code
    public var message: String
    /// `grpc-status-details-bin`, decoded from base64 (a `google.rpc.Status`-shaped message), when sent.
    public var details: [UInt8]?
    /// The trailing metadata (or, for a trailers-only answer, the headers).
    public var trailers: HTTPHeaders

    public init(_ code: Code, _ message: String, details: [UInt8]? = nil, trailers: HTTPHeaders = [:]) {
        self.code = code
        self.message = message
        self.details = details
        self.trailers = trailers
    }

    public var description: String { message.isEmpty ? code.name : "\(code.name): \(message)" }

    /// Whether the same call may succeed if tried again (the codes gRPC's clients retry).
    public var isTransient: Bool {
        switch code {
        case .unavailable, .resourceExhausted, .deadlineExceeded: true
        default: false
        }
    }

    /// The status a finished response carries: `grpc-status` from the trailers, or from the headers of a
    /// trailers-only answer. A response without one was cut (`UNAVAILABLE`, so it may be tried again); an HTTP
    /// status other than 200 maps as gRPC's HTTP mapping says.
    public init(status: Int, headers: HTTPHeaders, trailers: HTTPHeaders) {
        guard status == 200 else {
            let code: Code =
                switch status {
                case 400: .internal
                case 401: .unauthenticated
                case 403: .permissionDenied
                case 404: .unimplemented
                case 429, 502, 503, 504: .unavailable
                default: .unknown
                }
            self.init(code, "the server answered HTTP \(status)", trailers: headers)
            return
        }
        let fields = trailers["grpc-status"] != nil ? trailers : headers
        guard let raw = fields["grpc-status"] else {
            self.init(.unavailable, "the response ended without a grpc-status", trailers: trailers)
            return
        }
        let code = Int(raw.trimmingCharacters(in: .whitespaces)).flatMap(Code.init(rawValue:)) ?? .unknown
        self.init(
            code,
            Self.percentDecoded(fields["grpc-message"] ?? ""),
            details: fields["grpc-status-details-bin"].flatMap(Self.base64Decoded),
            trailers: fields
        )
    }

    /// `grpc-message` is percent-encoded UTF-8; a malformed escape is kept as it is.
    static func percentDecoded(_ text: String) -> String {
        guard text.contains("%") else { return text }
        return text.removingPercentEncoding ?? text
    }

    /// Binary metadata is base64, often without padding.
    static func base64Decoded(_ text: String) -> [UInt8]? {
        var padded = text.trimmingCharacters(in: .whitespaces)
        padded += String(repeating: "=", count: (4 - padded.count % 4) % 4)
        return Data(base64Encoded: padded).map(Array.init)
    }

    /// The one mapping of a gRPC status to Deckhand's vocabulary: a transient one is `SERVICE$UNAVAILABLE` (the
    /// caller's command is tried again later), the rest `GRPC$<NAME>` with the server's message.
    public func deckhandError(calling method: String) -> DeckhandError {
        let code: DeckhandError.Code =
            switch self.code {
            case .unavailable, .resourceExhausted: .unavailable
            case .deadlineExceeded: .timeout
            case .cancelled: .cancelled
            default: DeckhandError.Code("GRPC$" + self.code.name)
            }
        return DeckhandError(code, "\(method) failed: \(description)", underlying: self)
    }
}
