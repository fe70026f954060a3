import Foundation

/// A value in an AMQP field table: message headers and queue or exchange arguments.
public indirect enum AMQPFieldValue: Sendable, Equatable {
    case string(String)
    case bytes([UInt8])
    case int(Int64)
    case bool(Bool)
    case double(Double)
    case timestamp(Date)
    case table([String: AMQPFieldValue])
    case array([AMQPFieldValue])
    case void

    /// The value as a string, when it is one (UTF-8 bytes count as a string).
    public var stringValue: String? {
        switch self {
        case .string(let value): return value
        case .bytes(let bytes): return String(validating: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// The value as an integer, when it is one.
    public var intValue: Int64? {
        if case .int(let value) = self { return value }
        return nil
    }
}

extension AMQPFieldValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// A field table: header names to values.
public typealias AMQPTable = [String: AMQPFieldValue]
