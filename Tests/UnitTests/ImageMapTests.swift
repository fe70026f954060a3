import DeckhandCore
import Testing

/// `runtime_api.image_map`: which images Deckhand's sandbox image serves and which run as given; and
/// `remote.command`'s two spellings.
@Suite struct ImageMapTests {
    typealias Rule = RuntimeAPISettings.ImageRule

    @Test func patternsMatchWithStarsAnywhere() {
        let cases: [(pattern: String, image: String, matches: Bool)] = [
            ("*", "anything:at-all", true), ("*", "", true),
            ("ghcr.io/openhands/runtime:*", "ghcr.io/openhands/runtime:0.62-nikolaik", true),
            ("ghcr.io/openhands/runtime:*", "ghcr.io/openhands/runtimes:0.62", false),
            ("ubuntu:22.04", "ubuntu:22.04", true), ("ubuntu:22.04", "ubuntu:22.04x", false),
            ("*/runtime:oh_v*", "registry.example.com/team/runtime:oh_v0.62.0_abc", true),
            ("*/runtime:oh_v*", "runtime:oh_v0.62.0", false),
            ("a*b*c", "abc", true), ("a*b*c", "aXbYc", true), ("a*b*c", "acb", false), ("ab*ba", "aba", false),
        ]
        for (pattern, image, matches) in cases {
            #expect(Rule(pattern, .sandbox).matches(image) == matches, "\(pattern) ~ \(image)")
        }
    }

    @Test func theDefaultsGiveOpenHandsImagesToTheSandboxAndRunTheRestAsGiven() {
        let settings = RuntimeAPISettings()
        #expect(settings.target(for: "ghcr.io/openhands/runtime:0.62-nikolaik") == .sandbox)
        #expect(settings.target(for: "docker.all-hands.dev/all-hands-ai/runtime:0.40-nikolaik") == .sandbox)
        #expect(settings.target(for: "deckhand/sandbox:0.1.0") == .sandbox)
        #expect(settings.target(for: "python:3.12") == .asGiven(port: 60000))
    }

    @Test func theMapIsReadFromConfigurationAndFirstMatchWins() throws {
        let reader = try ConfigurationReader(
            fileContents: "runtime_api.image_map = myorg/runtime:*=as-given:8000, myorg/*=sandbox, *=sandbox\n"
        )
        let settings = try RuntimeAPISettings(reader: reader)
        #expect(settings.target(for: "myorg/runtime:1") == .asGiven(port: 8000))
        #expect(settings.target(for: "myorg/other:1") == .sandbox)
        #expect(settings.target(for: "python:3.12") == .sandbox)
    }

    @Test func aBadMapNamesTheKey() throws {
        for bad in ["no-equals-sign", "*=docker", "*=as-given:0", "=sandbox"] {
            let reader = try ConfigurationReader(environment: ["DECKHAND_RUNTIME_API_IMAGE_MAP": bad])
            let error = #expect(throws: DeckhandError.self) { try RuntimeAPISettings(reader: reader) }
            #expect(error?.message.contains("runtime_api.image_map") == true, "\(bad)")
        }
    }

    @Test func theRemoteCommandIsAJSONArrayOrWords() throws {
        let words = try RemoteSettings(
            reader: ConfigurationReader(environment: [
                "DECKHAND_REMOTE_URL": "http://127.0.0.1:1", "DECKHAND_REMOTE_API_KEY": "k",
                "DECKHAND_REMOTE_COMMAND": "python -u -m openhands.runtime.action_execution_server 60000",
            ])
        )
        #expect(words.command == ["python", "-u", "-m", "openhands.runtime.action_execution_server", "60000"])
        let array = try RemoteSettings(
            reader: ConfigurationReader(environment: ["DECKHAND_REMOTE_COMMAND": #"["sh", "-c", "echo a b"]"#])
        )
        #expect(array.command == ["sh", "-c", "echo a b"])
        let bad = try ConfigurationReader(environment: ["DECKHAND_REMOTE_COMMAND": #"["sh", 1]"#])
        let error = #expect(throws: DeckhandError.self) { try RemoteSettings(reader: bad) }
        #expect(error?.message.contains("remote.command") == true)
    }
}
