/// A parsed `multipart/form-data` body (RFC 7578): the parts with their field names, file names, content
/// types and bytes. Pure: the caller collects the body and enforces its size limit.
public struct MultipartFormData: Sendable, Equatable {
    public struct Part: Sendable, Equatable {
        /// The form field's name (`name=` of `Content-Disposition`).
        public var name: String
        /// The uploaded file's name, when the part is a file.
        public var filename: String?
        public var contentType: String?
        public var body: [UInt8]

        public init(name: String, filename: String?, contentType: String?, body: [UInt8]) {
            self.name = name
            self.filename = filename
            self.contentType = contentType
            self.body = body
        }
    }

    public var parts: [Part]

    /// Parses `body` with the boundary from `contentType` (`multipart/form-data; boundary=…`).
    public init(contentType: String, body: [UInt8]) throws(DeckhandError) {
        guard contentType.lowercased().hasPrefix("multipart/form-data"),
            let boundary = Self.parameter("boundary", in: contentType), !boundary.isEmpty
        else {
            throw DeckhandError(.invalidMultipart, "expected Content-Type multipart/form-data with a boundary")
        }
        let delimiter = Array("--\(boundary)".utf8)
        let crlf: [UInt8] = [13, 10]
        guard var position = body.firstIndex(of: delimiter, from: 0) else {
            throw DeckhandError(.invalidMultipart, "the body has no part delimited by the boundary")
        }
        var parts: [Part] = []
        let separator = crlf + delimiter
        while true {
            position += delimiter.count
            if body[position...].starts(with: [45, 45]) { break }  // "--": the closing delimiter
            guard body[position...].starts(with: crlf) else {
                throw DeckhandError(.invalidMultipart, "a boundary line is not followed by CRLF")
            }
            position += 2
            guard let headerEnd = body.firstIndex(of: crlf + crlf, from: position) else {
                throw DeckhandError(.invalidMultipart, "a part's headers do not end")
            }
            let headers = String(decoding: body[position..<headerEnd], as: UTF8.self)
            guard let next = body.firstIndex(of: separator, from: headerEnd + 4) else {
                throw DeckhandError(.invalidMultipart, "a part is not closed by the boundary")
            }
            var name: String?
            var filename: String?
            var partType: String?
            for line in headers.split(separator: "\r\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let field = line[..<colon].lowercased()
                let value = String(line[line.index(after: colon)...].drop { $0 == " " })
                if field == "content-disposition" {
                    name = Self.parameter("name", in: value)
                    filename = Self.parameter("filename", in: value)
                } else if field == "content-type" {
                    partType = value
                }
            }
            guard let name else {
                throw DeckhandError(.invalidMultipart, "a part has no Content-Disposition name")
            }
            parts.append(
                Part(name: name, filename: filename, contentType: partType, body: Array(body[(headerEnd + 4)..<next]))
            )
            position = next + 2
        }
        self.parts = parts
    }

    /// A form of `parts`, to encode with ``encoded(boundary:)``.
    public init(parts: [Part]) {
        self.parts = parts
    }

    /// The form as a request body, and the `Content-Type` that names its boundary.
    public func encoded(
        boundary: String = "deckhand-\(UInt64.random(in: 0...UInt64.max))"
    ) -> (
        contentType: String, body: [UInt8]
    ) {
        var body: [UInt8] = []
        for part in parts {
            var head = "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(part.name)\""
            if let filename = part.filename { head += "; filename=\"\(filename)\"" }
            head += "\r\n"
            if let type = part.contentType { head += "Content-Type: \(type)\r\n" }
            body += Array((head + "\r\n").utf8) + part.body + Array("\r\n".utf8)
        }
        body += Array("--\(boundary)--\r\n".utf8)
        return ("multipart/form-data; boundary=\(boundary)", body)
    }

    /// The first part named `name`.
    public func part(named name: String) -> Part? { parts.first { $0.name == name } }

    static func parameter(_ name: String, in header: String) -> String? {
        for piece in header.split(separator: ";").dropFirst() {
            let trimmed = piece.drop { $0 == " " }
            guard let equals = trimmed.firstIndex(of: "="), trimmed[..<equals].lowercased() == name else { continue }
            var value = trimmed[trimmed.index(after: equals)...]
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = value.dropFirst().dropLast() }
            return String(value)
        }
        return nil
    }
}

extension DeckhandError.Code {
    /// A multipart body that cannot be parsed.
    public static let invalidMultipart: Self = "REQUEST$INVALID_MULTIPART"
}
