import Crypto
import DeckhandCore
import Foundation

/// Encrypts the model keys stored per conversation (`conversations.llm_api_key`) with `llm.key_secret`
/// (ChaCha20-Poly1305): what PostgreSQL holds, its backups and anyone who reads the table see
/// `v1:<base64 nonce, ciphertext and tag>`, never a key. Only the processes configured with the secret (the
/// gateway that stores a key, the conversation workers that use it) can open it.
public struct StoredKeySealer: Sendable {
    public let key: SymmetricKey

    public static let prefix = "v1:"

    /// `secret`: 32 bytes (`llm.key_secret`, 64 hex digits).
    public init(secret: [UInt8]) throws {
        guard secret.count == 32 else {
            throw DeckhandError(.invalidConfiguration, "llm.key_secret must be 32 bytes (64 hex digits)")
        }
        key = SymmetricKey(data: secret)
    }

    /// The stored form of `modelKey`.
    public func seal(_ modelKey: String) throws -> String {
        let box = try ChaChaPoly.seal(Data(modelKey.utf8), using: key)
        return Self.prefix + box.combined.base64EncodedString()
    }

    /// The model key a stored form holds; fails for one sealed with another secret, or not sealed at all.
    public func open(_ stored: String) throws -> String {
        guard stored.hasPrefix(Self.prefix), let data = Data(base64Encoded: String(stored.dropFirst(Self.prefix.count)))
        else {
            throw DeckhandError(
                .invalidConfiguration,
                "the conversation's stored model key is not in the sealed form (written without llm.key_secret?)"
            )
        }
        do {
            let opened = try ChaChaPoly.open(try ChaChaPoly.SealedBox(combined: data), using: key)
            return String(decoding: opened, as: UTF8.self)
        } catch {
            throw DeckhandError(
                .invalidConfiguration,
                "the conversation's stored model key does not open with llm.key_secret (was the secret changed?)"
            )
        }
    }
}
