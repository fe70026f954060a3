#if canImport(Glibc)
import Glibc
#endif

/// Which node a process runs on, and the address other nodes reach what it serves at (`node.*` keys;
/// DESIGN §10). A runtime worker records its node in every sandbox row it makes, manages only its own node's
/// sandboxes, and publishes their servers on `advertiseHost`.
public struct NodeSettings: Sendable, Equatable {
    /// `node.id`: this node's name (default, or empty: the host name). Letters, digits, `.`, `_` and `-`, at most 64:
    /// it names the node's sandboxes and its queue.
    public var id: String = NodeSettings.hostName
    /// `node.advertise_host`: the IPv4 address of this machine that other nodes reach its sandboxes at; their
    /// servers listen on it. 127.0.0.1 (the default) is right only when every role runs on this machine.
    public var advertiseHost: String = "127.0.0.1"

    public init() {}

    public init(id: String, advertiseHost: String = "127.0.0.1") {
        self.id = id
        self.advertiseHost = advertiseHost
    }

    static let keys: Set<String> = ["node.id", "node.advertise_host"]

    public init(reader: ConfigurationReader) throws(DeckhandError) {
        id = reader.optionalString("node.id") ?? id
        guard Self.isValidID(id) else {
            throw reader.invalid(
                "node.id",
                expected: "1 to 64 letters, digits, '.', '_' or '-' (the node's name)",
                got: id
            )
        }
        advertiseHost = reader.string("node.advertise_host", default: advertiseHost)
        guard let octets = Self.ipv4(advertiseHost), octets != [0, 0, 0, 0], octets[0] < 224 else {
            throw reader.invalid(
                "node.advertise_host",
                expected: "an IPv4 address of this machine that other nodes can reach, such as 198.18.1.2",
                got: advertiseHost
            )
        }
    }

    /// Whether `id` can name a node: 1 to 64 of `[A-Za-z0-9._-]`.
    public static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64
            && id.unicodeScalars.allSatisfy {
                $0.isASCII
                    && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0))
            }
    }

    /// The four numbers of a dotted IPv4 address, or nil.
    static func ipv4(_ text: String) -> [Int]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let numbers = parts.compactMap { part -> Int? in
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCII), let value = Int(part), value <= 255 else {
                return nil
            }
            return value
        }
        return numbers.count == 4 ? numbers : nil
    }

    /// This machine's host name, made a valid node id ("node" when it has none).
    public static var hostName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "node" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let cleaned = String(
            String.UnicodeScalarView(name.unicodeScalars.map { isValidID(String($0)) ? $0 : "-" }).prefix(64)
        )
        return cleaned.isEmpty ? "node" : cleaned
    }
}
