import DeckhandCore
import Testing

@Suite struct FNV1aTests {
    @Test func theKnownValues() {
        #expect(FNV1a.hash("") == 0xcbf2_9ce4_8422_2325)
        #expect(FNV1a.hash("a") == 0xaf63_dc4c_8601_ec8c)
        var parts = FNV1a()
        parts.add("foo")
        parts.add("bar")
        #expect(parts.value == FNV1a.hash("foobar"), "adding in parts is hashing the whole")
    }
}
