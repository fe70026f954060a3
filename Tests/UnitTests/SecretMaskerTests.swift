import ConversationWorker
import DeckhandCore
import DeckhandStore
import Foundation
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

    /// The encodings a shell makes of a secret without trying: base64 (alone or inside a longer stream, at each
    /// offset, standard or URL-safe), percent-encoding, hex.
    @Test func encodedSecretsAreHiddenToo() throws {
        let secret = "tok-3f9a/7Q+zz-SECRET-value"
        let masker = SecretMasker([secret])
        func decodesToSecret(_ text: String) -> Bool {
            for word in text.split(whereSeparator: { " \n:=<>".contains($0) }) {
                let standard = word.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
                var padded = standard
                while padded.count % 4 != 0 { padded += "=" }
                if let data = Data(base64Encoded: padded), String(decoding: data, as: UTF8.self).contains(secret) {
                    return true
                }
            }
            return false
        }
        for prefix in ["", "a", "ab", "abc", "PATH=/usr/bin\nTOKEN="] {
            for suffix in ["", "\n", "\nHOME=/root\n"] {
                let stream = Data((prefix + secret + suffix).utf8)
                for encoded in [
                    stream.base64EncodedString(),
                    stream.base64EncodedString().replacingOccurrences(of: "+", with: "-")
                        .replacingOccurrences(of: "/", with: "_"),
                ] {
                    #expect(decodesToSecret(encoded), "the check itself sees the secret in \(encoded)")
                    let masked = masker.mask("output: \(encoded) done")
                    #expect(!decodesToSecret(masked), "\(prefix.debugDescription): \(masked)")
                    #expect(masked.contains(SecretMasker.placeholder))
                }
            }
        }
        let hex = Array(secret.utf8).map { String(format: "%02x", $0) }.joined()
        #expect(!masker.mask("hex \(hex)").contains(hex))
        #expect(!masker.mask("HEX \(hex.uppercased())").contains(hex.uppercased()))
        let percent = try #require(secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        #expect(!masker.mask("url ?t=\(percent)").contains(percent))
        let ordinary = "aGVsbG8gd29ybGQsIHRoaXMgaXMgbm90IGEgc2VjcmV0 and 68656c6c6f"
        #expect(masker.mask(ordinary) == ordinary, "text without the secret is left alone")
    }

    @Test func storedModelKeysAreSealedAndOpenOnlyWithTheirSecret() throws {
        let sealer = try StoredKeySealer(secret: Array(repeating: 7, count: 32))
        let stored = try sealer.seal("sk-live-abcdef123456")
        #expect(stored.hasPrefix("v1:") && !stored.contains("sk-live"))
        #expect(try sealer.seal("sk-live-abcdef123456") != stored, "a fresh nonce each time")
        #expect(try sealer.open(stored) == "sk-live-abcdef123456")
        let other = try StoredKeySealer(secret: Array(repeating: 8, count: 32))
        #expect(throws: DeckhandError.self) { try other.open(stored) }
        #expect(throws: DeckhandError.self) { try sealer.open("sk-live-abcdef123456") }
        #expect(throws: DeckhandError.self) { try StoredKeySealer(secret: [1, 2, 3]) }
    }
}
