import DeckhandCore
import Foundation
import HTTPClient
import Logging
import Synchronization

/// The `browse` action without a browser: fetch the page through the HTTP client and return its readable
/// text. Failures (DNS, refused, timeout, non-2xx, not text) are observations with `error: true`, never 500s.
struct Browser: Sendable {
    let client: LazyHTTPClient
    var timeout: Duration = .seconds(30)
    var maxRedirects = 5
    var maxBytes = 5 << 20

    func browse(_ url: String) async -> JSONValue {
        var current = url
        do {
            for _ in 0...maxRedirects {
                var request = HTTPRequest(url: current, headers: ["User-Agent": "deckhand-sandbox/1 (+browse)"])
                request.timeout = timeout
                let response = try await client.get().execute(request)
                if (300..<400).contains(response.status), let location = response.headers["location"] {
                    current = URL(string: location, relativeTo: URL(string: current))?.absoluteString ?? location
                    continue
                }
                guard (200..<300).contains(response.status) else {
                    return failure(url: current, "the server answered HTTP \(response.status) for \(current)")
                }
                let contentType = response.headers["content-type"]?.lowercased() ?? ""
                let body = response.body.prefix(maxBytes)
                guard let text = String(validating: body, as: UTF8.self) ?? String(bytes: body, encoding: .isoLatin1)
                else {
                    return failure(url: current, "the page at \(current) is not text (\(contentType))")
                }
                let isHTML = contentType.contains("html") || (contentType.isEmpty && text.contains("<html"))
                if !isHTML && !contentType.isEmpty && !contentType.hasPrefix("text/") && !contentType.contains("json")
                    && !contentType.contains("xml")
                {
                    return failure(url: current, "the page at \(current) is not text (\(contentType))")
                }
                let content = isHTML ? HTMLText(html: text).rendered(url: current) : "URL: \(current)\n\n\(text)"
                return observation(url: current, content: content, error: false)
            }
            return failure(url: current, "too many redirects (more than \(maxRedirects)) from \(url)")
        } catch let error as DeckhandError {
            return failure(url: current, "cannot fetch \(current): \(error.message)")
        } catch {
            return failure(url: current, "cannot fetch \(current): \(error)")
        }
    }

    private func failure(url: String, _ message: String) -> JSONValue {
        observation(url: url, content: message, error: true)
    }

    private func observation(url: String, content: String, error: Bool) -> JSONValue {
        [
            "observation": "browse",
            "content": .string(content),
            "message": .string("Visited \(url)"),
            "extras": [
                "url": .string(url),
                "trigger_by_action": "browse",
                "error": .bool(error),
                "screenshot": "",
                "open_pages_urls": .array([.string(url)]),
                "active_page_index": 0,
                "last_browser_action": "",
                "last_browser_action_error": error ? .string(content) : "",
                "focused_element_bid": "",
            ],
        ]
    }
}

/// An HTTP client made on first use: most sandboxes never browse, and libcurl's start-up (its thread,
/// OpenSSL's initialisation) is memory they need not pay for.
final class LazyHTTPClient: Sendable {
    private let client = Mutex<HTTPClient?>(nil)
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func get() throws -> HTTPClient {
        try client.withLock { client in
            if let client { return client }
            let created = try HTTPClient(logger: logger)
            client = created
            return created
        }
    }

    func shutdown() async {
        await client.withLock { $0.take() }?.shutdown()
    }
}
