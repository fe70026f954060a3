import CCurl
import DeckhandCore

extension Transfer {
    /// Whether this libcurl predates 8.0, whose HTTP/2 prior-knowledge connection reuse is broken.
    static let priorKnowledgeReuseIsBroken: Bool = deckhand_curl_version_num() < 0x08_00_00

    /// Fails a sink whose transfer never got an easy handle.
    static func failWithoutHandle(_ sink: ResponseSink, _ error: any Error) {
        switch sink {
        case .whole(let continuation):
            continuation.resume(throwing: error)
        case .stream(let stream):
            stream.head.resume(throwing: error)
            stream.body.finish(error)
        }
    }

    /// Sets every option of this transfer on its (fresh or reset) easy handle; returns the first failure.
    func configure(_ request: HTTPRequest) -> CURLcode {
        let handle = self.handle
        let context = Unmanaged.passUnretained(self).toOpaque()
        var result = CURLE_OK
        func check(_ code: CURLcode) {
            if result == CURLE_OK, code != CURLE_OK { result = code }
        }

        check(request.url.withCString { deckhand_easy_setopt_string(handle, CURLOPT_URL, $0) })
        check(deckhand_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        check(deckhand_easy_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer))
        check(deckhand_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, context))
        check(deckhand_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, context))
        check(
            deckhand_easy_setopt_data_callback(handle, CURLOPT_HEADERFUNCTION) { data, size, count, userdata in
                let transfer = Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
                transfer.receiveHeaderLine(UnsafeRawBufferPointer(start: data, count: size * count))
                return size * count
            }
        )
        check(
            deckhand_easy_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION) { data, size, count, userdata in
                let transfer = Unmanaged<Transfer>.fromOpaque(userdata!).takeUnretainedValue()
                let taken = transfer.receiveBody(UnsafeRawBufferPointer(start: data, count: size * count))
                return taken ? size * count : Int(CURL_WRITEFUNC_PAUSE)
            }
        )

        if let connectTimeout = request.connectTimeout {
            check(deckhand_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, connectTimeout.curlMilliseconds))
        }
        if let timeout = request.timeout {
            check(deckhand_easy_setopt_long(handle, CURLOPT_TIMEOUT_MS, timeout.curlMilliseconds))
        }
        if let socket = request.unixSocketPath {
            check(socket.withCString { deckhand_easy_setopt_string(handle, CURLOPT_UNIX_SOCKET_PATH, $0) })
        }
        let version: Int
        switch request.httpVersion {
        case .http1_1: version = Int(CURL_HTTP_VERSION_1_1)
        case .http2PriorKnowledge: version = Int(CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE)
        case .http2: version = Int(CURL_HTTP_VERSION_2TLS)
        }
        check(deckhand_easy_setopt_long(handle, CURLOPT_HTTP_VERSION, version))
        if request.httpVersion == .http2PriorKnowledge, Self.priorKnowledgeReuseIsBroken {
            // libcurl before 8.0 fails a reused h2c prior-knowledge connection with "Error in the HTTP2 framing
            // layer" (curl/curl#10634, fixed in 8.0): give each such transfer its own connection.
            check(deckhand_easy_setopt_long(handle, CURLOPT_FRESH_CONNECT, 1))
            check(deckhand_easy_setopt_long(handle, CURLOPT_FORBID_REUSE, 1))
        }
        switch request.tlsVerification {
        case .full:
            check(deckhand_easy_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1))
            check(deckhand_easy_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2))
        case .insecureNoVerification:
            check(deckhand_easy_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 0))
            check(deckhand_easy_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 0))
        }

        // Method and body. COPYPOSTFIELDS copies the bytes, so the request may go away.
        let method = request.method
        var body = request.body
        if body == nil, method == .post || method == .put || method == .patch { body = [] }
        if method == .head {
            check(deckhand_easy_setopt_long(handle, CURLOPT_NOBODY, 1))
        } else if let body {
            check(deckhand_easy_setopt_off_t(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count)))
            if body.isEmpty {
                check("".withCString { deckhand_easy_setopt_string(handle, CURLOPT_COPYPOSTFIELDS, $0) })
            } else {
                check(
                    body.withUnsafeBytes {
                        deckhand_easy_setopt_pointer(
                            handle,
                            CURLOPT_COPYPOSTFIELDS,
                            UnsafeMutableRawPointer(mutating: $0.baseAddress)
                        )
                    }
                )
            }
            if method != .post {
                check(method.rawValue.withCString { deckhand_easy_setopt_string(handle, CURLOPT_CUSTOMREQUEST, $0) })
            }
        } else if method != .get {
            check(method.rawValue.withCString { deckhand_easy_setopt_string(handle, CURLOPT_CUSTOMREQUEST, $0) })
        } else {
            check(deckhand_easy_setopt_long(handle, CURLOPT_HTTPGET, 1))
        }

        // Headers: the list lives as long as the transfer (freed in `close()`).
        var list: UnsafeMutablePointer<curl_slist>?
        for field in request.headers {
            let line = field.value.isEmpty ? "\(field.name);" : "\(field.name): \(field.value)"
            list = curl_slist_append(list, line)
        }
        if body != nil {
            // No `Expect: 100-continue` round trip, and no invented form content type.
            if !request.headers.contains(name: "Expect") { list = curl_slist_append(list, "Expect:") }
            if !request.headers.contains(name: "Content-Type") { list = curl_slist_append(list, "Content-Type:") }
        }
        headerList = list
        if let list {
            check(deckhand_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, list))
        }
        return result
    }
}

extension Duration {
    /// The duration in whole milliseconds for libcurl, at least 1 for any positive duration.
    var curlMilliseconds: Int {
        let (seconds, attoseconds) = components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        if milliseconds <= 0 { return self > .zero ? 1 : 0 }
        return Int(milliseconds)
    }
}
