/// An ordered list of HTTP header fields with case-insensitive lookup.
///
/// A name may appear more than once (`Set-Cookie`, `Vary`); `values(for:)` returns every value in order, and the
/// subscript returns the first. Names keep the spelling they were added with.
public struct HTTPHeaders: Sendable, Hashable, Sequence, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    /// One header field.
    public struct Field: Sendable, Hashable {
        /// The field name as sent or received.
        public var name: String
        /// The field value, without surrounding whitespace.
        public var value: String

        /// Creates a field.
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    private var fields: [Field]

    /// Creates an empty header list.
    public init() { self.fields = [] }

    /// Creates a header list from fields, in order.
    public init(_ fields: [(String, String)]) {
        self.fields = fields.map { Field(name: $0.0, value: $0.1) }
    }

    /// Creates a header list from a dictionary literal, in order.
    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements)
    }

    /// The number of fields.
    public var count: Int { fields.count }

    /// Whether there is no field.
    public var isEmpty: Bool { fields.isEmpty }

    /// Appends a field, keeping any existing field with the same name.
    public mutating func add(name: String, value: String) {
        fields.append(Field(name: name, value: value))
    }

    /// Replaces every field with this name by one field with this value.
    public mutating func replaceOrAdd(name: String, value: String) {
        remove(name: name)
        add(name: name, value: value)
    }

    /// Removes every field with this name (compared case-insensitively).
    public mutating func remove(name: String) {
        fields.removeAll { Self.namesMatch($0.name, name) }
    }

    /// Every value of the fields with this name (compared case-insensitively), in order.
    public func values(for name: String) -> [String] {
        fields.lazy.filter { Self.namesMatch($0.name, name) }.map(\.value)
    }

    /// Whether a field with this name is present (compared case-insensitively).
    public func contains(name: String) -> Bool {
        fields.contains { Self.namesMatch($0.name, name) }
    }

    /// The first value of the field with this name (compared case-insensitively), or `nil`.
    public subscript(name: String) -> String? {
        fields.first { Self.namesMatch($0.name, name) }?.value
    }

    /// Iterates over the fields in order.
    public func makeIterator() -> IndexingIterator<[Field]> {
        fields.makeIterator()
    }

    /// The fields, one `name: value` a line; values of `Authorization` and `Proxy-Authorization` are redacted.
    public var description: String {
        fields.map { field in
            Self.isSecret(field.name) ? "\(field.name): <redacted>" : "\(field.name): \(field.value)"
        }.joined(separator: "\n")
    }

    static func isSecret(_ name: String) -> Bool {
        namesMatch(name, "Authorization") || namesMatch(name, "Proxy-Authorization") || namesMatch(name, "Cookie")
    }

    static func namesMatch(_ lhs: String, _ rhs: String) -> Bool {
        let left = lhs.utf8
        let right = rhs.utf8
        guard left.count == right.count else { return false }
        for (a, b) in zip(left, right) where a != b {
            // ASCII case folding is enough: header names are tokens.
            guard a | 0x20 == b | 0x20, (a | 0x20) >= UInt8(ascii: "a"), (a | 0x20) <= UInt8(ascii: "z") else {
                return false
            }
        }
        return true
    }
}
