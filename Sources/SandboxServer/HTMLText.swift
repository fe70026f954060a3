import Foundation

/// Readable text from an HTML page for the `browse` action: the title, the body's text with block
/// elements on their own lines, and the links listed at the end. A tolerant scanner, not a DOM parser:
/// scripts, styles and comments are dropped, entities decoded, runs of white space collapsed.
struct HTMLText: Equatable {
    struct Link: Equatable {
        var text: String
        var href: String
    }

    var title: String
    var text: String
    var links: [Link]

    private static let blockTags: Set<String> = [
        "p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "section",
        "article", "header", "footer", "nav", "main", "pre", "blockquote", "hr", "dt", "dd", "form", "aside",
        "figure", "figcaption", "td", "th", "title", "body", "html",
    ]
    private static let skippedTags: Set<String> = ["script", "style", "noscript", "template", "svg", "head"]

    init(html: String) {
        var title = ""
        var text = ""
        var links: [Link] = []
        var openLink: (href: String, text: String)?
        var inTitle = false
        var skipping: String?
        var scalars = Substring(html)

        func appendText(_ raw: Substring) {
            let decoded = decodeEntities(raw)
            if inTitle { title += decoded }
            if skipping != nil { return }
            text += decoded
            if openLink != nil { openLink!.text += decoded }
        }

        while let lt = scalars.firstIndex(of: "<") {
            appendText(scalars[..<lt])
            let rest = scalars[lt...]
            if rest.hasPrefix("<!--") {
                if let end = rest.range(of: "-->") {
                    scalars = rest[end.upperBound...]
                } else {
                    scalars = ""
                }
                continue
            }
            guard let gt = rest.firstIndex(of: ">") else {
                scalars = ""
                break
            }
            let tag = rest[rest.index(after: lt)..<gt]
            scalars = rest[rest.index(after: gt)...]
            let closing = tag.hasPrefix("/")
            let name = tag.drop { $0 == "/" }.prefix { $0.isLetter || $0.isNumber }.lowercased()
            if let skipped = skipping {
                if closing && name == skipped { skipping = nil }
                continue
            }
            if !closing && Self.skippedTags.contains(name) && !tag.hasSuffix("/") {
                skipping = name
                if name == "head" {
                    // The head's title still counts: scan it separately.
                    if let titleStart = scalars.range(of: "<title", options: .caseInsensitive),
                        let headEnd = scalars.range(of: "</head>", options: .caseInsensitive),
                        titleStart.lowerBound < headEnd.lowerBound,
                        let open = scalars[titleStart.upperBound...].firstIndex(of: ">"),
                        let close = scalars[open...].range(of: "</title>", options: .caseInsensitive)
                    {
                        title = decodeEntities(scalars[scalars.index(after: open)..<close.lowerBound])
                    }
                }
                continue
            }
            if name == "title" {
                inTitle = !closing
                continue
            }
            if name == "a" {
                if closing {
                    if let link = openLink {
                        links.append(Link(text: collapse(link.text), href: link.href))
                        openLink = nil
                    }
                } else if let href = attribute("href", in: tag) {
                    openLink = (href, "")
                }
                continue
            }
            if Self.blockTags.contains(name) {
                text += "\n"
            }
        }
        appendText(scalars)
        self.title = collapse(title)
        self.text =
            text.split(separator: "\n", omittingEmptySubsequences: false)
            .map { collapse($0) }
            .filter { !$0.isEmpty }
            .joined(separator: "\n")
        self.links = links
    }

    /// The observation text: title, body text, then the links.
    func rendered(url: String) -> String {
        var output = "URL: \(url)\n"
        if !title.isEmpty { output += "Title: \(title)\n" }
        output += "\n" + text
        if !links.isEmpty {
            output += "\n\nLinks:\n"
            for (index, link) in links.enumerated() {
                output += "[\(index + 1)] \(link.text.isEmpty ? link.href : link.text) (\(link.href))\n"
            }
        }
        return output
    }
}

private func collapse<S: StringProtocol>(_ text: S) -> String {
    text.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
}

private func attribute(_ name: String, in tag: Substring) -> String? {
    guard let range = tag.range(of: name + "=", options: .caseInsensitive) else { return nil }
    var rest = tag[range.upperBound...]
    guard let first = rest.first else { return nil }
    if first == "\"" || first == "'" {
        rest = rest.dropFirst()
        guard let end = rest.firstIndex(of: first) else { return decodeEntities(rest) }
        return decodeEntities(rest[..<end])
    }
    return decodeEntities(rest.prefix { !$0.isWhitespace && $0 != ">" })
}

private let namedEntities: [String: String] = [
    "amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'", "nbsp": " ", "copy": "©", "reg": "®",
    "mdash": "—", "ndash": "–", "hellip": "…", "laquo": "«", "raquo": "»", "rsquo": "’", "lsquo": "‘",
    "rdquo": "”", "ldquo": "“",
]

func decodeEntities<S: StringProtocol>(_ text: S) -> String {
    guard text.contains("&") else { return String(text) }
    var result = ""
    var rest = Substring(text)
    while let amp = rest.firstIndex(of: "&") {
        result += rest[..<amp]
        let after = rest[rest.index(after: amp)...]
        if let semicolon = after.prefix(10).firstIndex(of: ";") {
            let entity = after[..<semicolon]
            var replacement: String?
            if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                replacement = UInt32(entity.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init).map { String($0) }
            } else if entity.hasPrefix("#") {
                replacement = UInt32(entity.dropFirst()).flatMap(Unicode.Scalar.init).map { String($0) }
            } else {
                replacement = namedEntities[String(entity)]
            }
            if let replacement {
                result += replacement
                rest = after[after.index(after: semicolon)...]
                continue
            }
        }
        result += "&"
        rest = after
    }
    return result + rest
}
