import DeckhandCore
import Foundation
import Testing

@Suite struct JSONValueTests {
    @Test func membersCanBeReadAndSetOnObjectsOnly() {
        var object: JSONValue = ["a": 1]
        object["b"] = "two"
        #expect(object == ["a": 1, "b": "two"])
        var array: JSONValue = [1, 2]
        array["b"] = "ignored"
        #expect(array == [1, 2])
        #expect(array["a"] == nil)
        #expect(JSONValue(String?.none) == .null)
        #expect(JSONValue("x") == "x")
    }

    @Test func numbersAndLenientAccessorsRoundTrip() throws {
        let decoded = try JSONDecoder().decode(
            JSONValue.self,
            from: Data(#"{"n":3,"f":1.5,"s":"7","t":"true","z":null}"#.utf8)
        )
        #expect(decoded["n"]?.intValue == 3)
        #expect(decoded["f"]?.doubleValue == 1.5)
        #expect(decoded["s"]?.intValue == 7)
        #expect(decoded["t"]?.boolValue == true)
        #expect(decoded["z"]?.isNull == true)
        let encoded = String(decoding: try JSONEncoder().encode(JSONValue(3)), as: UTF8.self)
        #expect(encoded == "3")
    }
}
