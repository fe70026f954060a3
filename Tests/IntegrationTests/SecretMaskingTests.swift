import ConversationWorker
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import LLM
import Testing

/// A secret of the operator's (`runtime.environment`) that the agent prints, plain and encoded, never reaches
/// a stored event, a published one, or the model.
@Suite struct SecretMaskingTests {
    @Test func anEnvironmentSecretNeverLeavesTheSandbox() async throws {
        try await TestConversations.with { bed in
            let secret = "ghp_\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))/+x"
            let script = FakeLLM.Script(steps: [
                .bash("env | grep DEPLOY_TOKEN"),
                .bash("printf %s \"$DEPLOY_TOKEN\" | base64 -w0"),
                .bash("env | base64 -w0"),
                .bash("printf %s \"$DEPLOY_TOKEN\" | od -An -tx1 | tr -d ' \\n'"),
                .bash(
                    "python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ[\"DEPLOY_TOKEN\"], safe=\"\"))'"
                ),
                .finish("Printed it every way."),
            ])
            let environment = ["DEPLOY_TOKEN": secret]
            try await running(
                try bed.makeRuntimeWorker(environment: environment),
                bed.makeWorker(sandboxSecrets: Array(environment.values))
            ) {
                let id = try await bed.start(script: script, message: "Show the token.")
                let model = try await bed.model(of: id)
                let ended = try await bed.waitFor(id, [.finished, .error])
                #expect(ended.agentState == .finished, "\(ended.lastError ?? "")")
                let stored = try await bed.events(id).map(\.json.serialized).joined(separator: "\n")
                let published = bed.publishedEvents(id).map(\.serialized).joined(separator: "\n")
                let prompts = bed.llm.requests(model: model).map { request in
                    request.messages.map { $0.content ?? "" }.joined(separator: "\n")
                }.joined(separator: "\n")
                #expect(stored.contains(SecretMasker.placeholder), "the commands ran and their output was masked")
                let bytes = Data(secret.utf8)
                let forms = [
                    secret, bytes.base64EncodedString(), bytes.map { String(format: "%02x", $0) }.joined(),
                    secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? secret,
                ]
                for (place, text) in [
                    ("stored events", stored), ("published events", published), ("the model", prompts),
                ] {
                    for form in forms {
                        #expect(!text.contains(form), "\(place) show the secret as \(form)")
                    }
                    #expect(!Self.holdsBase64(of: secret, text), "\(place) hold the secret inside base64")
                }
            }
        }
    }

    /// Whether some base64 word of `text` decodes to something containing `secret`.
    static func holdsBase64(of secret: String, _ text: String) -> Bool {
        for word in text.split(whereSeparator: { !($0.isLetter || $0.isNumber || "+/=".contains($0)) })
        where word.count >= 8 {
            var padded = String(word)
            while padded.count % 4 != 0 { padded += "=" }
            if let data = Data(base64Encoded: padded), String(decoding: data, as: UTF8.self).contains(secret) {
                return true
            }
        }
        return false
    }
}
