import Messaging
import Testing

@Suite struct TraceparentTests {
    @Test func aTraceparentIsW3CShapedAndFresh() {
        let first = Traceparent.make()
        let second = Traceparent.make()
        #expect(first.wholeMatch(of: /00-[0-9a-f]{32}-[0-9a-f]{16}-01/) != nil, "\(first)")
        #expect(first != second)
    }
}
