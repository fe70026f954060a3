import DeckhandCore
import Foundation

/// A type that can be read from a cell of a query result (in the server's text output format).
public protocol PostgresDecodable: Sendable {
    /// Decodes the cell, throwing a `POSTGRES$DECODE` error naming the column on NULL or a mismatch.
    static func decode(from cell: PostgresCell) throws(DeckhandError) -> Self
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> Wrapped? {
        guard cell.text != nil else { return nil }
        return try Wrapped.decode(from: cell)
    }
}

extension String: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> String {
        try cell.requireText(as: String.self)
    }
}

extension Int64: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> Int64 {
        guard let value = Int64(try cell.requireText(as: Int64.self)) else { throw cell.mismatch(Int64.self) }
        return value
    }
}

extension Int: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> Int {
        guard let value = Int(try cell.requireText(as: Int.self)) else { throw cell.mismatch(Int.self) }
        return value
    }
}

extension Int32: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> Int32 {
        guard let value = Int32(try cell.requireText(as: Int32.self)) else { throw cell.mismatch(Int32.self) }
        return value
    }
}

extension Bool: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> Bool {
        switch try cell.requireText(as: Bool.self) {
        case "t", "true": return true
        case "f", "false": return false
        default: throw cell.mismatch(Bool.self)
        }
    }
}

extension Double: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> Double {
        guard let value = Double(try cell.requireText(as: Double.self)) else { throw cell.mismatch(Double.self) }
        return value
    }
}

extension UUID: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> UUID {
        guard let value = UUID(uuidString: try cell.requireText(as: UUID.self)) else { throw cell.mismatch(UUID.self) }
        return value
    }
}

extension Date: PostgresDecodable {
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> Date {
        guard let value = PostgresTimestamp.parse(try cell.requireText(as: Date.self)) else {
            throw cell.mismatch(Date.self)
        }
        return value
    }
}

extension Array: PostgresDecodable where Element == UInt8 {
    /// `bytea` (hex output `\x…`) as its bytes; any other column as the UTF-8 bytes of its text.
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> [UInt8] {
        let text = try cell.requireText(as: [UInt8].self)
        guard cell.type == PostgresType.bytea else { return Array(text.utf8) }
        guard let bytes = PostgresBytea.decodeHex(text) else { throw cell.mismatch([UInt8].self) }
        return bytes
    }
}

extension Data: PostgresDecodable {
    /// `bytea` as its bytes; any other column (e.g. `jsonb`) as the UTF-8 bytes of its text.
    public static func decode(from cell: PostgresCell) throws(DeckhandError) -> Data {
        Data(try [UInt8].decode(from: cell))
    }
}

/// `bytea` hex output (`\x0aff…`).
enum PostgresBytea {
    static func decodeHex(_ text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0 else {
            return nil
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity((utf8.count - 2) / 2)
        var index = 2
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func nibble(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
