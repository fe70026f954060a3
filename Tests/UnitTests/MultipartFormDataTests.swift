import DeckhandCore
import Testing

@Suite struct MultipartFormDataTests {
    @Test func filesAndFieldsAreParsed() throws {
        let body =
            "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\nContent-Type: application/zip\r\n\r\n"
            + "PK\u{3}\u{4}binary\r\n--not-the-boundary\r\n--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ--\r\n"
        let form = try MultipartFormData(contentType: "multipart/form-data; boundary=XyZ", body: Array(body.utf8))
        #expect(form.parts.count == 2)
        let file = try #require(form.part(named: "file"))
        #expect(file.filename == "a.zip")
        #expect(file.contentType == "application/zip")
        #expect(file.body == Array("PK\u{3}\u{4}binary\r\n--not-the-boundary".utf8))
        #expect(form.part(named: "note")?.body == Array("hello".utf8))
        #expect(form.part(named: "note")?.filename == nil)
    }

    @Test func aQuotedBoundaryAndAnEmptyPartWork() throws {
        let body = "--b\r\nContent-Disposition: form-data; name=\"empty\"\r\n\r\n\r\n--b--"
        let form = try MultipartFormData(contentType: "multipart/form-data; boundary=\"b\"", body: Array(body.utf8))
        #expect(form.parts == [.init(name: "empty", filename: nil, contentType: nil, body: [])])
    }

    @Test(arguments: [
        ("application/json", "--b--"),
        ("multipart/form-data; boundary=b", "no boundary here"),
        ("multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nunterminated"),
        ("multipart/form-data; boundary=b", "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--"),
    ])
    func malformedBodiesAreRefused(contentType: String, body: String) {
        #expect(throws: DeckhandError.self) { try MultipartFormData(contentType: contentType, body: Array(body.utf8)) }
    }
}
