import DeckhandCore
import Foundation
import Testing

@Suite struct JSONParsingTests {
    @Test func valuesParseAsJSONDecoderReadsThem() throws {
        let text = """
            {"a": [1, -2.5, 3e2, true, false, null], "s": "quote \\" backslash \\\\ slash \\/ \\n\\t\\r\\b\\f",
             "u": "\\u00e9\\u4e2d\\ud83d\\ude00", "raw": "é中😀", "nested": {"empty": {}, "list": []}, "n": 0}
            """
        let parsed = try JSONValue(parsing: text)
        let decoded = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(parsed == decoded)
        #expect(parsed["u"] == "é中😀")
        #expect(parsed["raw"] == "é中😀")
        #expect(parsed["a"] == [1, -2.5, 300, true, false, nil])
    }

    @Test func serializedTextParsesBackToTheSameValue() throws {
        let value: JSONValue = [
            "text": "line\nnext \"quoted\" \u{01} tab\t é", "int": 42, "big": 12_345_678_901, "fraction": 0.125,
            "flags": [true, false, nil], "object": ["b": 1, "a": 2],
        ]
        let text = value.serialized
        #expect(try JSONValue(parsing: text) == value)
        #expect(try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) == value)
        // Keys are sorted, so equal values serialize equally.
        let unordered: JSONValue = ["object": ["b": 1, "a": 2]]
        #expect(unordered.serialized == #"{"object":{"a":2,"b":1}}"#)
    }

    @Test func malformedTextIsAnError() {
        for text in ["", "{", "[1,]", "{\"a\" 1}", "tru", "\"open", "1 2", "{\"a\":1,}", "\"bad \\x\"", "[01a]"] {
            #expect(throws: DeckhandError.self, "\(text)") { try JSONValue(parsing: text) }
        }
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        #expect(throws: DeckhandError.self) { try JSONValue(parsing: deep) }
    }
}
