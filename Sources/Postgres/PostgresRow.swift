import DeckhandCore
import Foundation

/// The column names and types of a result, shared by all its rows.
public final class PostgresColumns: Sendable {
    /// Column names, in result order.
    public let names: [String]
    /// Column type OIDs (`PQftype`), in result order.
    public let types: [UInt32]
    private let positions: [String: Int]

    /// Columns with these names and type OIDs; the first column of a repeated name wins a lookup by name.
    public init(names: [String], types: [UInt32]) {
        self.names = names
        self.types = types
        var positions: [String: Int] = [:]
        for (index, name) in names.enumerated() where positions[name] == nil { positions[name] = index }
        self.positions = positions
    }

    /// The position of the column called `name`.
    public func index(of name: String) -> Int? { positions[name] }
}

/// One cell handed to a `PostgresDecodable` type: its text form (nil for NULL), its type OID and its column name.
public struct PostgresCell: Sendable {
    /// The server's text output for this cell, or nil for SQL NULL.
    public var text: String?
    /// The column's type OID.
    public var type: UInt32
    /// The column's name, for error messages.
    public var column: String

    public init(text: String?, type: UInt32, column: String) {
        self.text = text
        self.type = type
        self.column = column
    }

    /// The text, or a `POSTGRES$DECODE` error naming the column when the cell is NULL.
    public func requireText<T>(as type: T.Type) throws(DeckhandError) -> String {
        guard let text else {
            throw DeckhandError(.postgresDecode, "column \"\(column)\" is NULL; decode it as \(T.self)? instead")
        }
        return text
    }

    /// A `POSTGRES$DECODE` error saying that this cell is not a `T`.
    public func mismatch<T>(_ type: T.Type) -> DeckhandError {
        DeckhandError(
            .postgresDecode,
            "column \"\(column)\" (type OID \(self.type)) cannot be decoded as \(T.self): \(preview)"
        )
    }

    private var preview: String {
        guard let text else { return "NULL" }
        return text.count > 40 ? "\"\(text.prefix(40))…\"" : "\"\(text)\""
    }
}

/// One row of a query result; values are kept in the server's text format and decoded on demand.
public struct PostgresRow: Sendable {
    /// The result's columns.
    public let columns: PostgresColumns
    /// The raw text of each cell, nil for NULL.
    public let values: [String?]

    public init(columns: PostgresColumns, values: [String?]) {
        self.columns = columns
        self.values = values
    }

    /// The cell of the column called `column`, or a `POSTGRES$DECODE` error when there is no such column.
    public func cell(_ column: String) throws(DeckhandError) -> PostgresCell {
        guard let index = columns.index(of: column) else {
            throw DeckhandError(
                .postgresDecode,
                "no column \"\(column)\" in the result (columns: \(columns.names.joined(separator: ", ")))"
            )
        }
        return PostgresCell(text: values[index], type: columns.types[index], column: column)
    }

    /// The cell at position `index`, or a `POSTGRES$DECODE` error when it is out of range.
    public func cell(at index: Int) throws(DeckhandError) -> PostgresCell {
        guard values.indices.contains(index) else {
            throw DeckhandError(.postgresDecode, "no column at index \(index) (the result has \(values.count))")
        }
        return PostgresCell(text: values[index], type: columns.types[index], column: columns.names[index])
    }

    /// The value of `column` as a `T`; use an Optional `T` for a column that may be NULL.
    public func decode<T: PostgresDecodable>(_ type: T.Type, _ column: String) throws -> T {
        try T.decode(from: cell(column))
    }

    /// The value at position `index` as a `T`; use an Optional `T` for a column that may be NULL.
    public func decode<T: PostgresDecodable>(_ type: T.Type, _ index: Int) throws -> T {
        try T.decode(from: cell(at: index))
    }

    /// The JSON in `column` (`json`, `jsonb` or text) decoded as a `T`.
    public func decodeJSON<T: Decodable>(
        _ type: T.Type,
        _ column: String,
        decoder: JSONDecoder = JSONDecoder()
    ) throws -> T {
        try Self.decodeJSON(type, cell(column), decoder: decoder)
    }

    /// The JSON at position `index` decoded as a `T`.
    public func decodeJSON<T: Decodable>(
        _ type: T.Type,
        _ index: Int,
        decoder: JSONDecoder = JSONDecoder()
    ) throws -> T {
        try Self.decodeJSON(type, cell(at: index), decoder: decoder)
    }

    private static func decodeJSON<T: Decodable>(_ type: T.Type, _ cell: PostgresCell, decoder: JSONDecoder) throws -> T
    {
        let text = try cell.requireText(as: T.self)
        do {
            return try decoder.decode(T.self, from: Data(text.utf8))
        } catch {
            throw DeckhandError(
                .postgresDecode,
                "column \"\(cell.column)\" does not hold JSON for \(T.self)",
                underlying: error
            )
        }
    }
}
