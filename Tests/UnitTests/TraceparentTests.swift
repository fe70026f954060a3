import DeckhandCore
import Testing

@Suite struct TraceparentTests {
    @Test func aTraceparentIsW3CShapedAndFresh() {
        let first = Traceparent.make()
        let second = Traceparent.make()
        #expect(first.wholeMatch(of: /00-[0-9a-f]{32}-[0-9a-f]{16}-01/) != nil, "\(first)")
        #expect(first != second)
    }

    @Test func aChildKeepsTheTraceAndTheFlagsWithASpanOfItsOwn() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        let child = Traceparent.child(of: parent)
        #expect(child.hasPrefix("00-4bf92f3577b34da6a3ce929d0e0e4736-") && child.hasSuffix("-00"), "\(child)")
        #expect(!child.contains("00f067aa0ba902b7"))
        #expect(Traceparent.traceID(of: parent) == "4bf92f3577b34da6a3ce929d0e0e4736")
        for bad in [
            "", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f35-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            #expect(Traceparent.traceID(of: bad) == nil, "\(bad)")
            #expect(Traceparent.traceID(of: Traceparent.child(of: bad)) != nil, "a bad parent starts a new trace")
        }
    }
}
