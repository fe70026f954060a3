import CCurl
import DeckhandCore
import Foundation
import Synchronization

/// Where a transfer's result goes: one whole response, or a head and then a stream of body chunks.
enum ResponseSink: Sendable {
    case whole(CheckedContinuation<HTTPResponse, any Error>)
    case stream(StreamSink)
}

/// The consumer side of a streamed transfer.
struct StreamSink: Sendable {
    let head: CheckedContinuation<StreamHead, any Error>
    let body: BodyBuffer
    let trailers: TrailerStore
}

/// The response head handed to ``HTTPClient/stream(_:)`` once the headers are complete.
struct StreamHead: Sendable {
    var status: Int
    var headers: HTTPHeaders
}

/// Holds the trailers of a streamed response; written by the curl thread when the body ends.
final class TrailerStore: Sendable {
    let fields = Mutex(HTTPHeaders())
}

/// One transfer on the curl thread: its easy handle, header list, error buffer and response so far.
///
/// Confined to the curl thread from creation to `close()`; libcurl's callbacks reach it through an unretained
/// `Unmanaged` pointer, valid while the loop's table holds the transfer (the handle leaves the multi handle
/// before the transfer leaves the table).
final class Transfer {
    let id: UInt64
    let handle: UnsafeMutableRawPointer
    let sink: ResponseSink
    let summary: String
    let connectTimeout: Duration?
    let timeout: Duration?
    let secret: String?
    var headerList: UnsafeMutablePointer<curl_slist>?
    let errorBuffer: UnsafeMutablePointer<CChar>
    var head = HTTPResponseHeadParser()
    var body: [UInt8] = []
    var headDelivered = false

    init(id: UInt64, handle: UnsafeMutableRawPointer, request: HTTPRequest, sink: ResponseSink) {
        self.id = id
        self.handle = handle
        self.sink = sink
        self.summary =
            "\(request.method) \(request.redactedURL)"
            + (request.unixSocketPath.map { " over the unix socket \($0)" } ?? "")
        self.connectTimeout = request.connectTimeout
        self.timeout = request.timeout
        self.secret = HTTPRequest.password(in: request.url)
        self.errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE))
        self.errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
    }

    /// Frees the header list and the error buffer; the easy handle is the loop's to reuse or clean up.
    func close() {
        if let headerList { curl_slist_free_all(headerList) }
        headerList = nil
        errorBuffer.deallocate()
    }

    // MARK: Callbacks (on the curl thread)

    func receiveHeaderLine(_ line: UnsafeRawBufferPointer) {
        if head.consume(line: line) == .headComplete {
            deliverHead()
        }
    }

    /// Takes a body chunk; returns `false` when a streamed body's reader is behind and the transfer must pause.
    func receiveBody(_ chunk: UnsafeRawBufferPointer) -> Bool {
        switch sink {
        case .whole:
            body.append(contentsOf: chunk)
            return true
        case .stream(let stream):
            deliverHead()
            return stream.body.offer(chunk)
        }
    }

    private func deliverHead() {
        guard !headDelivered, case .stream(let stream) = sink else { return }
        headDelivered = true
        let status = head.status ?? Int(info(CURLINFO_RESPONSE_CODE))
        stream.head.resume(returning: StreamHead(status: status, headers: head.headers))
    }

    // MARK: Completion

    /// Completes the transfer with libcurl's result code.
    func complete(_ code: CURLcode) {
        guard code == CURLE_OK else {
            fail(error(for: code))
            return
        }
        switch sink {
        case .whole(let continuation):
            let status = head.status ?? Int(info(CURLINFO_RESPONSE_CODE))
            continuation.resume(
                returning: HTTPResponse(status: status, headers: head.headers, body: body, trailers: head.trailers)
            )
        case .stream(let stream):
            deliverHead()
            stream.trailers.fields.withLock { $0 = head.trailers }
            stream.body.finish(nil)
        }
    }

    /// Fails the transfer with `error` (a cancellation, a shutdown, or a mapped libcurl error).
    func fail(_ error: any Error) {
        switch sink {
        case .whole(let continuation):
            continuation.resume(throwing: error)
        case .stream(let stream):
            if !headDelivered {
                headDelivered = true
                stream.head.resume(throwing: error)
            }
            stream.body.finish(error)
        }
    }

    private func info(_ info: CURLINFO) -> Int {
        var value = 0
        _ = deckhand_easy_getinfo_long(handle, info, &value)
        return value
    }

    /// Maps a libcurl error to a ``DeckhandError`` with curl's own text; the URL's password never appears.
    func error(for code: CURLcode) -> DeckhandError {
        var detail = String(cString: errorBuffer)
        if detail.isEmpty { detail = String(cString: curl_easy_strerror(code)) }
        if let secret, !secret.isEmpty { detail = detail.replacingOccurrences(of: secret, with: "<redacted>") }
        let message = "\(summary): \(detail) (curl error \(code.rawValue))"
        switch code {
        case CURLE_OPERATION_TIMEDOUT:
            var connectMicroseconds: curl_off_t = 0
            _ = deckhand_easy_getinfo_off_t(handle, CURLINFO_CONNECT_TIME_T, &connectMicroseconds)
            let connectLimited = connectTimeout.map { connect in timeout.map { connect < $0 } ?? true } ?? false
            if connectMicroseconds == 0, connectLimited {
                return DeckhandError(.httpConnectTimeout, "connect timeout \(connectTimeout!) exceeded: \(message)")
            }
            return DeckhandError(.httpTimeout, "total timeout \(timeout.map { "\($0)" } ?? "") exceeded: \(message)")
        case CURLE_COULDNT_CONNECT:
            return DeckhandError(.httpConnectionFailed, message)
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return DeckhandError(.httpDNS, message)
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_ISSUER_ERROR,
            CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CRL_BADFILE,
            CURLE_SSL_SHUTDOWN_FAILED, CURLE_SSL_CLIENTCERT:
            return DeckhandError(.httpTLS, message)
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT, CURLE_NOT_BUILT_IN, CURLE_BAD_FUNCTION_ARGUMENT,
            CURLE_UNKNOWN_OPTION:
            return DeckhandError(.httpInvalidRequest, message)
        default:
            return DeckhandError(.httpTransfer, message)
        }
    }
}

extension HTTPRequest {
    /// The password in the URL's user information, if any (so that it can be scrubbed from curl's messages).
    static func password(in url: String) -> String? {
        guard let schemeEnd = url.range(of: "://") else { return nil }
        let rest = url[schemeEnd.upperBound...]
        let authority = rest[..<(rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex)]
        guard let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") else {
            return nil
        }
        return String(authority[authority.index(after: colon)..<at])
    }
}
