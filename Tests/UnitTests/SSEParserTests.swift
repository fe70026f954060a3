import HTTPClient
import Testing

@Suite struct SSEParserTests {
    @Test func parsesEventsWithIDTypeAndMultiLineData() {
        var parser = ServerSentEventParser()
        let events = parser.feed(Array("id: 7\nevent: tick\ndata: one\ndata: two\n\ndata: three\n\n".utf8))
        #expect(
            events == [
                ServerSentEvent(id: "7", event: "tick", data: "one\ntwo"),
                ServerSentEvent(id: "7", event: "message", data: "three"),
            ]
        )
    }

    @Test func handlesCRLFAndCRAndChunksSplitAnywhere() {
        let text = "data: a\r\n\r\ndata: b\r\rdata: c\n\n"
        var whole = ServerSentEventParser()
        let expected = [
            ServerSentEvent(data: "a"), ServerSentEvent(data: "b"), ServerSentEvent(data: "c"),
        ]
        #expect(whole.feed(Array(text.utf8)) == expected)
        var byteWise = ServerSentEventParser()
        var events: [ServerSentEvent] = []
        for byte in text.utf8 { events += byteWise.feed([byte]) }
        #expect(events == expected)
    }

    @Test func ignoresCommentsAndUnknownFieldsAndTreatsBareFieldAsEmpty() {
        var parser = ServerSentEventParser()
        let events = parser.feed(Array(": keep-alive\nfoo: bar\ndata\n\ndata:no-space\n\n".utf8))
        #expect(events == [ServerSentEvent(data: ""), ServerSentEvent(data: "no-space")])
    }

    @Test func dropsOnlyOneLeadingSpaceAndKeepsColonsInValues() {
        var parser = ServerSentEventParser()
        let events = parser.feed(Array("data:  two spaces: and colon\n\n".utf8))
        #expect(events == [ServerSentEvent(data: " two spaces: and colon")])
    }

    @Test func blockWithoutDataDispatchesNothingButIDAndRetryPersist() {
        var parser = ServerSentEventParser()
        #expect(parser.feed(Array("id: 42\nretry: 1500\n\n".utf8)).isEmpty)
        #expect(parser.lastEventID == "42")
        #expect(parser.reconnectionTime == 1500)
        let events = parser.feed(Array("retry: x5\ndata: d\nretry: 300\n\n".utf8))
        #expect(events == [ServerSentEvent(id: "42", data: "d", retry: 300)])
        #expect(parser.reconnectionTime == 300)
    }

    @Test func idWithNULIsIgnoredAndEmptyIDResets() {
        var parser = ServerSentEventParser()
        _ = parser.feed(Array("id: 1\ndata: a\n\n".utf8))
        let events = parser.feed(Array("id: 2\u{0}x\ndata: b\n\nid\ndata: c\n\n".utf8))
        #expect(events == [ServerSentEvent(id: "1", data: "b"), ServerSentEvent(id: "", data: "c")])
    }

    @Test func unterminatedEventIsNotDispatchedAndBOMIsDropped() {
        var parser = ServerSentEventParser()
        let events = parser.feed([0xEF, 0xBB, 0xBF] + Array("data: x\n\ndata: partial".utf8))
        #expect(events == [ServerSentEvent(data: "x")])
    }

    @Test func lineAPIFeedsWholeLines() {
        var parser = ServerSentEventParser()
        #expect(parser.feed(line: "event: update") == nil)
        #expect(parser.feed(line: "data: {}") == nil)
        #expect(parser.feed(line: "") == ServerSentEvent(event: "update", data: "{}"))
    }
}

@Suite struct HTTPHeadParsingTests {
    @Test func parsesStatusAndHeadersCaseInsensitively() {
        var parser = HTTPResponseHeadParser()
        let lines = [
            "HTTP/1.1 200 OK\r\n", "Content-Type: text/plain\r\n", "Set-Cookie: a=1\r\n", "set-cookie: b=2\r\n",
            "X-Spaced:   padded  \r\n",
        ]
        for line in lines { #expect(parser.consume(line: Array(line.utf8)) == .none) }
        #expect(parser.consume(line: Array("\r\n".utf8)) == .headComplete)
        #expect(parser.status == 200)
        #expect(parser.headers["content-type"] == "text/plain")
        #expect(parser.headers.values(for: "SET-COOKIE") == ["a=1", "b=2"])
        #expect(parser.headers["x-spaced"] == "padded")
        #expect(parser.trailers.isEmpty)
    }

    @Test func skipsInterimResponsesAndCollectsTrailers() {
        var parser = HTTPResponseHeadParser()
        let lines = ["HTTP/1.1 100 Continue", "", "HTTP/2 200", "content-type: application/grpc", ""]
        let events = lines.map { parser.consume(line: Array($0.utf8)) }
        #expect(events == [.none, .none, .none, .none, .headComplete])
        #expect(parser.status == 200)
        #expect(parser.headers.values(for: "content-type") == ["application/grpc"])
        _ = parser.consume(line: Array("grpc-status: 0\r\n".utf8))
        _ = parser.consume(line: Array("grpc-message: ok\r\n".utf8))
        #expect(parser.trailers["Grpc-Status"] == "0")
        #expect(parser.trailers["grpc-message"] == "ok")
        #expect(parser.headers["grpc-status"] == nil)
    }

    @Test func headersRedactSecretsInDescriptionAndURLPasswords() {
        let headers: HTTPHeaders = ["Authorization": "Bearer s3cret", "Accept": "*/*"]
        #expect(!headers.description.contains("s3cret"))
        #expect(headers.description.contains("Accept: */*"))
        let request = HTTPRequest(url: "https://user:hunter2@example.com/path?q=1")
        #expect(request.redactedURL == "https://user:<redacted>@example.com/path?q=1")
        #expect(HTTPRequest(url: "http://example.com/a@b").redactedURL == "http://example.com/a@b")
    }
}
