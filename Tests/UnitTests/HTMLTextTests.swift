import Testing

@testable import SandboxServer

@Suite struct HTMLTextTests {
    @Test func titleTextAndLinksComeOutReadable() {
        let html = """
            <!DOCTYPE html><html><head><title>Deckhand &amp; Friends</title>
            <style>body { color: red }</style><script>var x = "<p>not text</p>";</script></head>
            <body><h1>Hello</h1><p>First   paragraph with <b>bold</b> and a <a href="/docs?a=1&amp;b=2">doc link</a>.</p>
            <!-- a comment <p>hidden</p> --><ul><li>one</li><li>two &lt;3&gt;</li></ul>
            <a href='https://example.org'>Example</a></body></html>
            """
        let page = HTMLText(html: html)
        #expect(page.title == "Deckhand & Friends")
        #expect(page.text == "Hello\nFirst paragraph with bold and a doc link.\none\ntwo <3>\nExample")
        #expect(
            page.links == [
                .init(text: "doc link", href: "/docs?a=1&b=2"), .init(text: "Example", href: "https://example.org"),
            ]
        )
        let rendered = page.rendered(url: "http://x/")
        #expect(rendered.hasPrefix("URL: http://x/\nTitle: Deckhand & Friends\n\nHello"))
        #expect(rendered.contains("[1] doc link (/docs?a=1&b=2)"))
    }

    @Test func entitiesDecode() {
        #expect(decodeEntities("a &amp; b &#65;&#x42; &unknown; &") == "a & b AB &unknown; &")
    }

    @Test func brokenMarkupDoesNotTrap() {
        #expect(HTMLText(html: "<p>unclosed <a href=x>link").text == "unclosed link")
        #expect(HTMLText(html: "text <").text == "text")
    }
}
