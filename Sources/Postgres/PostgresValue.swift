import Foundation

/// A value bound to a `$n` parameter of a query.
///
/// Every value is sent with an explicit type OID except `.text` (OID 0, so the server coerces it to `varchar`,
/// an enum or any type with a text input) and `.null`. `.bytea` travels in binary format, everything else as text.
public enum PostgresValue: Sendable, Hashable {
    /// Text, sent untyped (OID 0) so the server can coerce it to `varchar`, an enum, `inet`, ….
    case text(String)
    /// `int8`; the server casts it to narrower integer columns on assignment.
    case int(Int64)
    /// `bool`.
    case bool(Bool)
    /// `float8` (NaN and ±infinity included).
    case double(Double)
    /// `uuid`.
    case uuid(UUID)
    /// `timestamptz`, sent in UTC with microseconds.
    case timestamptz(Date)
    /// A JSON document, already serialised.
    case jsonb(String)
    /// `bytea`, sent in binary format.
    case bytea([UInt8])
    /// SQL NULL (untyped).
    case null

    /// A `jsonb` value from serialised JSON bytes.
    public static func jsonb(_ data: Data) -> PostgresValue { .jsonb(String(decoding: data, as: UTF8.self)) }

    /// A `jsonb` value holding `value` encoded with `encoder`.
    public static func json<T: Encodable>(_ value: T, encoder: JSONEncoder = JSONEncoder()) throws -> PostgresValue {
        .jsonb(try encoder.encode(value))
    }

    /// `value` or `.null` when it is nil.
    public static func optional(_ value: PostgresValue?) -> PostgresValue { value ?? .null }

    /// The type OID sent to the server (0: let the server infer it).
    public var typeOID: UInt32 {
        switch self {
        case .text, .null: return 0
        case .int: return PostgresType.int8
        case .bool: return PostgresType.bool
        case .double: return PostgresType.float8
        case .uuid: return PostgresType.uuid
        case .timestamptz: return PostgresType.timestamptz
        case .jsonb: return PostgresType.jsonb
        case .bytea: return PostgresType.bytea
        }
    }

    /// 1 for binary (`bytea`), 0 for text.
    public var format: Int32 {
        if case .bytea = self { return 1 }
        return 0
    }

    /// The bytes sent on the wire, or nil for SQL NULL. Text formats carry no terminating NUL here.
    public var wireBytes: [UInt8]? {
        switch self {
        case .text(let string): return Array(string.utf8)
        case .int(let value): return Array(String(value).utf8)
        case .bool(let value): return value ? [UInt8(ascii: "t")] : [UInt8(ascii: "f")]
        case .double(let value): return Array(Self.doubleText(value).utf8)
        case .uuid(let value): return Array(value.uuidString.utf8)
        case .timestamptz(let date): return Array(PostgresTimestamp.format(date).utf8)
        case .jsonb(let json): return Array(json.utf8)
        case .bytea(let bytes): return bytes
        case .null: return nil
        }
    }

    static func doubleText(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value == .infinity { return "Infinity" }
        if value == -.infinity { return "-Infinity" }
        return "\(value)"
    }
}

extension PostgresValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(nilLiteral: ()) { self = .null }
}

/// The type OIDs this client sends and recognises (`pg_type.oid`).
public enum PostgresType {
    public static let bool: UInt32 = 16
    public static let bytea: UInt32 = 17
    public static let int8: UInt32 = 20
    public static let int2: UInt32 = 21
    public static let int4: UInt32 = 23
    public static let text: UInt32 = 25
    public static let json: UInt32 = 114
    public static let float4: UInt32 = 700
    public static let float8: UInt32 = 701
    public static let varchar: UInt32 = 1043
    public static let timestamp: UInt32 = 1114
    public static let timestamptz: UInt32 = 1184
    public static let uuid: UInt32 = 2950
    public static let jsonb: UInt32 = 3802
}
