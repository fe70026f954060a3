import DeckhandCore
import Testing

@Suite struct NodeSettingsTests {
    private func node(_ environment: [String: String]) throws -> NodeSettings {
        try DeckhandConfiguration(reader: ConfigurationReader(environment: environment)).node
    }

    @Test func defaultsAreTheHostNameAndLoopback() throws {
        let defaults = try node([:])
        #expect(defaults.id == NodeSettings.hostName)
        #expect(NodeSettings.isValidID(defaults.id))
        #expect(defaults.advertiseHost == "127.0.0.1")
        // Empty is the default too (the shipped file leaves node.id empty).
        #expect(try node(["DECKHAND_NODE_ID": ""]).id == NodeSettings.hostName)
    }

    @Test func aNodeIsNamedAndAdvertised() throws {
        let settings = try node(["DECKHAND_NODE_ID": "rack-2.b_1", "DECKHAND_NODE_ADVERTISE_HOST": "198.18.1.2"])
        #expect(settings == NodeSettings(id: "rack-2.b_1", advertiseHost: "198.18.1.2"))
    }

    @Test func badValuesNameTheKey() throws {
        let cases: [(String, String, String)] = [
            ("DECKHAND_NODE_ID", "a b", "node.id"),
            ("DECKHAND_NODE_ID", "node/1", "node.id"),
            ("DECKHAND_NODE_ID", String(repeating: "n", count: 65), "node.id"),
            ("DECKHAND_NODE_ADVERTISE_HOST", "0.0.0.0", "node.advertise_host"),
            ("DECKHAND_NODE_ADVERTISE_HOST", "example.org", "node.advertise_host"),
            ("DECKHAND_NODE_ADVERTISE_HOST", "198.18.1.256", "node.advertise_host"),
            ("DECKHAND_NODE_ADVERTISE_HOST", "239.1.1.1", "node.advertise_host"),
            ("DECKHAND_NODE_ADVERTISE_HOST", "", "node.advertise_host"),
        ]
        for (variable, value, key) in cases {
            let error = #expect(throws: DeckhandError.self) { try node([variable: value]) }
            #expect(error?.message.contains(key) == true, "\(value): \(error?.message ?? "")")
        }
    }
}
