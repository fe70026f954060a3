import DeckhandCore
import Foundation

/// Replaces the secrets a conversation knows (its sandbox's session key, its model key, the sandbox
/// environment's values) by `<secret_hidden>` in every string of an event before it is stored (DESIGN §5).
public struct SecretMasker: Sendable {
    public static let placeholder = "<secret_hidden>"
    let secrets: [String]

    /// Secrets shorter than 6 characters are left alone: masking them would garble ordinary text.
    public init(_ secrets: [String?]) {
        self.secrets = Array(Set(secrets.compactMap { $0 }.filter { $0.count >= 6 })).sorted { $0.count > $1.count }
    }

    public func mask(_ text: String) -> String {
        var text = text
        for secret in secrets where text.contains(secret) {
            text = text.replacingOccurrences(of: secret, with: Self.placeholder)
        }
        return text
    }

    public func mask(_ value: JSONValue) -> JSONValue {
        switch value {
        case .string(let text): return .string(mask(text))
        case .array(let items): return .array(items.map(mask))
        case .object(let object): return .object(object.mapValues(mask))
        default: return value
        }
    }

    public func mask(_ event: Event) -> Event {
        guard !secrets.isEmpty else { return event }
        var event = event
        event.message = mask(event.message)
        event.content = mask(event.content)
        event.args = mask(event.args)
        event.extras = mask(event.extras)
        return event
    }
}
