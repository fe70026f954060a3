import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// HTTP/2 with trailers against `nghttpd` (from Debian's `nghttp2-server`), started and stopped by the test.
@Suite struct HTTP2Tests {
    private static func nghttpdPath() throws -> String {
        for path in ["/usr/sbin/nghttpd", "/usr/bin/nghttpd", "/usr/local/bin/nghttpd"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw DeckhandError(
            .unavailable,
            "nghttpd is missing: `apt-get install nghttp2-server` (deploy/local/services.sh start installs it)"
        )
    }

    /// Runs `nghttpd` over h2c on 127.0.0.1, serving `files` without content-length, adding `grpc-status: 0` as a trailer.
    private static func withNghttpd<T: Sendable>(
        files: [String: String],
        _ body: (_ port: Int, _ client: HTTPClient) async throws -> T
    ) async throws -> T {
        let executable = try nghttpdPath()
        let root = FileManager.default.temporaryDirectory.appendingPathComponent(TestEnvironment.uniqueName("h2"))
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        for (name, contents) in files {
            try Data(contents.utf8).write(to: root.appendingPathComponent(name))
        }
        // A free port below the ephemeral range, where no other test's connection can take it first.
        let port = try TestEnvironment.freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "--no-tls", "--no-content-length", "--address=127.0.0.1", "--htdocs=\(root.path)",
            "--trailer=grpc-status: 0", "\(port)",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            // SIGKILL: a child spawned from a pool thread inherits its blocked SIGTERM and SIGINT.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let client = try HTTPClient()
        do {
            // Wait until nghttpd listens (at most ~5 s).
            var attempts = 0
            while true {
                do {
                    _ = try await client.execute(
                        HTTPRequest(url: "http://127.0.0.1:\(port)/", httpVersion: .http2PriorKnowledge)
                    )
                    break
                } catch let error as DeckhandError where error.code == .httpConnectionFailed && attempts < 100 {
                    attempts += 1
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            let result = try await body(port, client)
            await client.shutdown()
            return result
        } catch {
            await client.shutdown()
            throw error
        }
    }

    @Test func http2PriorKnowledgeWithTrailers() async throws {
        try await Self.withNghttpd(files: ["reply.txt": "hello over h2"]) { port, client in
            let url = "http://127.0.0.1:\(port)/reply.txt"
            // Several requests in a row: libcurl 7.88 cannot reuse an h2c connection, which the client works around.
            for _ in 0..<3 {
                let response = try await client.execute(HTTPRequest(url: url, httpVersion: .http2PriorKnowledge))
                #expect(response.status == 200)
                #expect(response.text == "hello over h2")
                #expect(response.headers["trailer"] == "grpc-status")
                #expect(response.headers["grpc-status"] == nil)
                // Like a gRPC response, no content-length: libcurl 7.88 ends a response with a content-length
                // at its last byte and never reads trailers after it.
                #expect(response.trailers["grpc-status"] == "0")
            }

            let streamed = try await client.stream(HTTPRequest(url: url, httpVersion: .http2PriorKnowledge))
            #expect(streamed.status == 200)
            #expect(String(decoding: try await streamed.collectBody(), as: UTF8.self) == "hello over h2")
            #expect(streamed.trailers["Grpc-Status"] == "0")
        }
    }
}
