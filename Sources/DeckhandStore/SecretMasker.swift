import DeckhandCore
import Foundation

/// Replaces the secrets a conversation knows (its sandbox's session key, its model key, the sandbox
/// environment's values) by `<secret_hidden>` in every string of an event before it is stored (DESIGN §5), in
/// plain form and in the encodings a shell turns them into without trying: base64 (standard and URL-safe, at
/// whatever offset the secret sits in the encoded stream), percent-encoding and hex. What the model sees is
/// built from the stored events, so it never gets them either.
public struct SecretMasker: Sendable {
    public static let placeholder = "<secret_hidden>"
    public let secrets: [String]

    /// Secrets shorter than 6 characters are left alone: masking them would garble ordinary text.
    public init(_ secrets: [String?]) {
        var forms: Set<String> = []
        for secret in secrets.compactMap({ $0 }) where secret.count >= 6 {
            forms.insert(secret)
            forms.formUnion(Self.encodings(of: secret))
        }
        self.secrets = forms.sorted { $0.count > $1.count }
    }

    /// The forms of `secret` to mask besides itself. Base64 encodes 3 bytes as 4 characters, so a secret in a
    /// longer stream is encoded one of three ways depending on its offset; for each, the characters of the
    /// groups that hold only the secret's bytes are the same whatever surrounds it (the edges, which mix in
    /// neighbouring bytes, are left: at most two bytes of the secret show there).
    public static func encodings(of secret: String) -> Set<String> {
        let bytes = Array(secret.utf8)
        var forms: Set<String> = []
        for shift in 0..<3 {
            let stream = Array((Data(repeating: 0, count: shift) + Data(bytes)).base64EncodedString().utf8)
            let firstGroup = (shift + 2) / 3
            let endGroup = (shift + bytes.count) / 3
            guard endGroup - firstGroup >= 2 else { continue }
            let core = String(decoding: stream[(firstGroup * 4)..<(endGroup * 4)], as: UTF8.self)
            forms.insert(core)
            forms.insert(core.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_"))
        }
        for allowed in [CharacterSet.alphanumerics, .urlQueryAllowed, .urlPathAllowed] {
            if let encoded = secret.addingPercentEncoding(withAllowedCharacters: allowed), encoded != secret {
                forms.insert(encoded)
            }
        }
        let hex = bytes.map { String($0, radix: 16) }.map { $0.count == 1 ? "0" + $0 : $0 }.joined()
        forms.insert(hex)
        forms.insert(hex.uppercased())
        return forms.filter { $0.count >= 8 }
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
