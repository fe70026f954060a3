import ConversationWorker
import DeckhandCore
import Testing

@Suite struct SecretMaskerTests {
    @Test func secretsAreHiddenInEveryStringOfAnEvent() {
        let masker = SecretMasker(["session-key-123456", "sk-model-key-abcdef", nil, "short"])
        var event = Event(
            source: .environment,
            message: "saw sk-model-key-abcdef",
            kind: .observation("run"),
            content: "X-Session-API-Key: session-key-123456\nshort stays",
            extras: [
                "command": "echo $KEY", "metadata": ["prefix": "session-key-123456"], "list": ["sk-model-key-abcdef"],
            ]
        )
        event.args = ["nested": ["deep": "sk-model-key-abcdef!"]]
        let masked = masker.mask(event)
        let text = masked.json.serialized
        #expect(!text.contains("session-key-123456"))
        #expect(!text.contains("sk-model-key-abcdef"))
        #expect(masked.content == "X-Session-API-Key: <secret_hidden>\nshort stays")
        #expect(masked.extras["metadata"]?["prefix"] == "<secret_hidden>")
        #expect(masked.args["nested"]?["deep"] == "<secret_hidden>!")
        #expect(masked.message == "saw <secret_hidden>")
    }

    @Test func aMaskerWithoutSecretsChangesNothing() {
        let event = Event.userMessage("hello")
        #expect(SecretMasker([nil, ""]).mask(event) == event)
    }
}
