import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Testing

/// Runs `body` with a fresh client and shuts the client down afterwards.
private func withClient<T: Sendable>(_ body: (HTTPClient) async throws -> T) async throws -> T {
    let client = try HTTPClient()
    do {
        let result = try await body(client)
        await client.shutdown()
        return result
    } catch {
        await client.shutdown()
        throw error
    }
}

private func url(_ port: Int, _ path: String) -> String {
    "http://127.0.0.1:\(port)\(path)"
}

@Suite struct HTTPClientTests {
    @Test func dockerPingOverUnixSocket() async throws {
        let socket = TestEnvironment.dockerSocket
        try await withClient { client in
            let request = HTTPRequest(
                url: "http://localhost/v1.41/_ping",
                connectTimeout: .seconds(2),
                timeout: .seconds(10),
                unixSocketPath: socket
            )
            let response: HTTPResponse
            do {
                response = try await client.execute(request)
            } catch {
                throw TestEnvironment.serviceMissing("The Docker engine", at: socket, error)
            }
            #expect(response.status == 200)
            #expect(response.text == "OK")
            #expect(response.headers["api-version"] != nil)
        }
    }

    @Test func twoHundredConcurrentRequestsAllSucceed() async throws {
        try await withLoopbackServer { port in
            try await withClient { client in
                try await withThrowingTaskGroup(of: (Int, HTTPResponse).self) { group in
                    for index in 0..<200 {
                        group.addTask {
                            let request = HTTPRequest.text(url: url(port, "/echo"), body: "request \(index)")
                            return (index, try await client.execute(request))
                        }
                    }
                    var seen = 0
                    for try await (index, response) in group {
                        #expect(response.status == 200)
                        let echo = try response.decode(LoopbackHTTPServer.Echo.self)
                        #expect(echo.body == "request \(index)")
                        seen += 1
                    }
                    #expect(seen == 200)
                }
                let hello = try await client.execute(HTTPRequest(url: url(port, "/hello")))
                #expect(hello.text == "Hello, world!")
            }
        }
    }

    @Test func jsonEchoRoundTrip() async throws {
        struct Payload: Codable, Equatable {
            var name: String
            var count: Int
            var tags: [String]
        }
        let payload = Payload(name: "deckhand ✓", count: 3, tags: ["a", "b"])
        try await withLoopbackServer { port in
            try await withClient { client in
                let request = try HTTPRequest.json(
                    .put,
                    url: url(port, "/echo"),
                    body: payload,
                    headers: ["X-Trace": "t-1"]
                )
                let response = try await client.execute(request).expectSuccess()
                #expect(response.headers["Content-Type"] == "application/json")
                let echo = try response.decode(LoopbackHTTPServer.Echo.self)
                #expect(echo.method == "PUT")
                #expect(echo.headers["content-type"] == "application/json")
                #expect(echo.headers["x-trace"] == "t-1")
                #expect(echo.headers["expect"] == nil)
                let roundTripped = try JSONDecoder().decode(Payload.self, from: Data(echo.body.utf8))
                #expect(roundTripped == payload)
            }
        }
    }

    @Test func statusCodesAreResponsesNotErrors() async throws {
        try await withLoopbackServer { port in
            try await withClient { client in
                let response = try await client.execute(HTTPRequest(url: url(port, "/status/418")))
                #expect(response.status == 418)
                #expect(throws: DeckhandError.self) { try response.expectSuccess() }
                let head = try await client.execute(HTTPRequest(method: .head, url: url(port, "/hello")))
                #expect(head.status == 200)
                #expect(head.body.isEmpty)
            }
        }
    }

    @Test func chunkedTrailersAreSeparateFromHeaders() async throws {
        try await withLoopbackServer { port in
            try await withClient { client in
                let response = try await client.execute(HTTPRequest(url: url(port, "/trailers")))
                #expect(response.text == "body before trailers")
                #expect(response.trailers["grpc-status"] == "0")
                #expect(response.trailers["X-Checksum"] == "abc")
                #expect(response.headers["grpc-status"] == nil)

                let streamed = try await client.stream(HTTPRequest(url: url(port, "/trailers")))
                #expect(String(decoding: try await streamed.collectBody(), as: UTF8.self) == "body before trailers")
                #expect(streamed.trailers["grpc-status"] == "0")
            }
        }
    }

    @Test func cancellationAbortsTheTransferPromptly() async throws {
        try await withLoopbackServer { port in
            try await withClient { client in
                let task = Task { try await client.execute(HTTPRequest(url: url(port, "/slow?ms=10000"))) }
                try await Task.sleep(for: .milliseconds(150))
                let clock = ContinuousClock()
                let cancelled = clock.now
                task.cancel()
                let result = await task.result
                let elapsed = clock.now - cancelled
                // The response would take 10 s: cancelling must abort the transfer, not wait for it.
                #expect(elapsed < .seconds(5), "cancellation took \(elapsed)")
                #expect(throws: CancellationError.self) { try result.get() }

                // A task cancelled before it sends never reaches the server.
                let early = Task {
                    withUnsafeCurrentTask { $0?.cancel() }
                    return try await client.execute(HTTPRequest(url: url(port, "/slow?ms=10000")))
                }
                await #expect(throws: CancellationError.self) { try await early.value }

                // The client still works afterwards.
                #expect(try await client.execute(HTTPRequest(url: url(port, "/hello"))).text == "Hello, world!")
            }
        }
    }

    @Test func totalTimeoutThrowsTheTimeoutError() async throws {
        try await withLoopbackServer { port in
            try await withClient { client in
                let clock = ContinuousClock()
                let started = clock.now
                let request = HTTPRequest(url: url(port, "/slow?ms=5000"), timeout: .milliseconds(200))
                let error = await #expect(throws: DeckhandError.self) { try await client.execute(request) }
                #expect(error?.code == .httpTimeout)
                #expect(error?.message.contains("total timeout") == true)
                #expect(clock.now - started < .milliseconds(1500))
            }
        }
    }

    @Test func connectingToAClosedPortGivesTheConnectionError() async throws {
        // Port 1: nothing listens there, and it is outside the ephemeral range, so the connection cannot
        // land on another test's socket (or, through a simultaneous open, on itself).
        let port = 1
        try await withClient { client in
            let request = HTTPRequest(url: url(port, "/hello"), connectTimeout: .seconds(2))
            let error = await #expect(throws: DeckhandError.self) { try await client.execute(request) }
            #expect(error?.code == .httpConnectionFailed)
            #expect(error?.message.contains("127.0.0.1") == true)
        }
    }

    @Test func tlsToAPlainHTTPServerGivesTheTLSError() async throws {
        try await withLoopbackServer { port in
            try await withClient { client in
                let request = HTTPRequest(url: "https://127.0.0.1:\(port)/hello", timeout: .seconds(5))
                let error = await #expect(throws: DeckhandError.self) { try await client.execute(request) }
                #expect(error?.code == .httpTLS)
            }
        }
    }

    @Test func errorsNeverShowURLPasswords() async throws {
        let port = try await withLoopbackServer { port in port }
        try await withClient { client in
            let request = HTTPRequest(url: "http://user:hunter2@127.0.0.1:\(port)/hello")
            let error = await #expect(throws: DeckhandError.self) { try await client.execute(request) }
            #expect(error.map { "\($0)".contains("hunter2") } == false)
        }
    }

    @Test func streamedServerSentEventsArriveInOrder() async throws {
        try await withLoopbackServer { port in
            try await withClient { client in
                let response = try await client.stream(HTTPRequest(url: url(port, "/sse?count=5&interval_ms=20")))
                #expect(response.status == 200)
                #expect(response.headers["content-type"]?.hasPrefix("text/event-stream") == true)
                var events: [ServerSentEvent] = []
                for try await event in response.sseEvents { events.append(event) }
                #expect(
                    events == (1...5).map { ServerSentEvent(id: "\($0)", event: "tick", data: "event \($0)") }
                )
            }
        }
    }

    @Test func aSlowReaderPausesAndResumesTheTransfer() async throws {
        // 3 MiB of echo, well past the 1 MiB the client buffers before it pauses the transfer.
        let text = String(repeating: "0123456789abcdef", count: 3 << 16)
        try await withLoopbackServer { port in
            try await withClient { client in
                let response = try await client.stream(HTTPRequest.text(url: url(port, "/echo"), body: text))
                #expect(response.status == 200)
                try await Task.sleep(for: .milliseconds(200))
                var bytes: [UInt8] = []
                for try await chunk in response.body {
                    bytes += chunk
                    if bytes.count < 1 << 20 { try await Task.sleep(for: .milliseconds(1)) }
                }
                let echo = try HTTPResponse(status: 200, body: bytes).decode(LoopbackHTTPServer.Echo.self)
                #expect(echo.body == text)
            }
        }
    }

    @Test func droppingAStreamAbortsItsTransfer() async throws {
        try await withLoopbackServer { port in
            try await withClient { client in
                let clock = ContinuousClock()
                let started = clock.now
                let response = try await client.stream(HTTPRequest(url: url(port, "/sse?count=1000&interval_ms=20")))
                var received = 0
                for try await _ in response.sseEvents {
                    received += 1
                    if received == 3 { break }
                }
                #expect(received == 3)
                // Cancelling a stream consumer's task ends its iteration at once.
                let consumer = Task {
                    let stream = try await client.stream(HTTPRequest(url: url(port, "/sse?count=1000&interval_ms=20")))
                    var count = 0
                    for try await _ in stream.sseEvents { count += 1 }
                    return count
                }
                try await Task.sleep(for: .milliseconds(200))
                consumer.cancel()
                _ = await consumer.result
                #expect(clock.now - started < .seconds(5))
            }
        }
    }

    @Test func shutdownFailsTransfersInFlight() async throws {
        try await withLoopbackServer { port in
            let client = try HTTPClient()
            let task = Task { try await client.execute(HTTPRequest(url: url(port, "/slow?ms=5000"))) }
            try await Task.sleep(for: .milliseconds(150))
            await client.shutdown()
            let error = await #expect(throws: DeckhandError.self) { try await task.value }
            #expect(error?.code == .httpShutdown)
            let later = await #expect(throws: DeckhandError.self) {
                try await client.execute(HTTPRequest(url: url(port, "/hello")))
            }
            #expect(later?.code == .httpShutdown)
        }
    }

}
