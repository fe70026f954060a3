import DeckhandCore

/// A message in Protocol Buffers' binary wire format, written by hand from its field table: it writes its fields
/// and reads them back one at a time, so a field it does not know is skipped (a server adds fields freely).
///
/// proto3 rules: a scalar field at its zero value is not written unless the field is `optional` (explicit
/// presence: use the writer's `optional…` methods); repeated scalars of the messages written here are sent
/// unpacked only where the table says so (strings and messages always are), and both forms are read.
public protocol ProtobufMessage: Sendable {
    /// A message with every field at its default.
    init()
    /// Writes the fields that are set.
    func encode(to writer: inout ProtobufWriter)
    /// Takes one field read from the wire; a field this message does not know is ignored.
    mutating func decode(_ field: ProtobufField) throws
}

extension ProtobufMessage {
    /// The message's wire bytes.
    public func serialized() -> [UInt8] {
        var writer = ProtobufWriter()
        encode(to: &writer)
        return writer.bytes
    }

    /// Reads a message from its wire bytes; fields this message does not know are skipped.
    public init(serialized bytes: some Collection<UInt8>) throws {
        self.init()
        var reader = ProtobufReader(Array(bytes))
        while let field = try reader.next() {
            try decode(field)
        }
    }
}

/// Writes fields in Protocol Buffers' wire format.
public struct ProtobufWriter: Sendable {
    /// The bytes written so far.
    public private(set) var bytes: [UInt8] = []

    public init() {}

    enum WireType: UInt64 {
        case varint = 0
        case fixed64 = 1
        case lengthDelimited = 2
        case fixed32 = 5
    }

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    mutating func key(_ field: Int, _ type: WireType) {
        varint(UInt64(field) << 3 | type.rawValue)
    }

    /// A length-delimited field: a nested message written by hand, bytes or a string.
    public mutating func lengthDelimited(_ field: Int, _ payload: some Collection<UInt8>) {
        key(field, .lengthDelimited)
        varint(UInt64(payload.count))
        bytes.append(contentsOf: payload)
    }

    // MARK: Scalars (left out at their zero value)

    public mutating func string(_ field: Int, _ value: String) {
        if !value.isEmpty { lengthDelimited(field, Array(value.utf8)) }
    }

    public mutating func bytes(_ field: Int, _ value: [UInt8]) {
        if !value.isEmpty { lengthDelimited(field, value) }
    }

    public mutating func bool(_ field: Int, _ value: Bool) {
        if value { optionalBool(field, value) }
    }

    public mutating func uint32(_ field: Int, _ value: UInt32) {
        if value != 0 { optionalUInt32(field, value) }
    }

    public mutating func uint64(_ field: Int, _ value: UInt64) {
        if value != 0 { optionalUInt64(field, value) }
    }

    /// An `int32` or an enum: a negative value is sign-extended to a 10-byte varint.
    public mutating func int32(_ field: Int, _ value: Int32) {
        if value != 0 { optionalInt32(field, value) }
    }

    public mutating func int64(_ field: Int, _ value: Int64) {
        if value != 0 {
            key(field, .varint)
            varint(UInt64(bitPattern: value))
        }
    }

    /// A `float`: four bytes, little-endian IEEE 754.
    public mutating func float(_ field: Int, _ value: Float) {
        if value != 0 { optionalFloat(field, value) }
    }

    public mutating func double(_ field: Int, _ value: Double) {
        if value != 0 {
            key(field, .fixed64)
            withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        }
    }

    // MARK: Explicit presence (`optional` fields: written when set, even at zero)

    public mutating func optionalString(_ field: Int, _ value: String?) {
        if let value { lengthDelimited(field, Array(value.utf8)) }
    }

    public mutating func optionalBool(_ field: Int, _ value: Bool?) {
        if let value {
            key(field, .varint)
            varint(value ? 1 : 0)
        }
    }

    public mutating func optionalUInt32(_ field: Int, _ value: UInt32?) {
        if let value {
            key(field, .varint)
            varint(UInt64(value))
        }
    }

    public mutating func optionalUInt64(_ field: Int, _ value: UInt64?) {
        if let value {
            key(field, .varint)
            varint(value)
        }
    }

    public mutating func optionalInt32(_ field: Int, _ value: Int32?) {
        if let value {
            key(field, .varint)
            varint(UInt64(bitPattern: Int64(value)))
        }
    }

    public mutating func optionalFloat(_ field: Int, _ value: Float?) {
        if let value {
            key(field, .fixed32)
            withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        }
    }

    // MARK: Messages, repeated fields and maps

    /// A nested message: written when present, even when all its fields are at their defaults.
    public mutating func message(_ field: Int, _ value: (some ProtobufMessage)?) {
        if let value { lengthDelimited(field, value.serialized()) }
    }

    public mutating func messages(_ field: Int, _ values: [some ProtobufMessage]) {
        for value in values { lengthDelimited(field, value.serialized()) }
    }

    /// A repeated `string`: one field per element, empty strings included.
    public mutating func strings(_ field: Int, _ values: [String]) {
        for value in values { lengthDelimited(field, Array(value.utf8)) }
    }

    /// A `map<string, string>`: one entry message `{key = 1, value = 2}` per pair, in key order (as protobuf's
    /// deterministic serialization writes them), both fields written even when empty (as protobuf writes entries).
    public mutating func stringMap(_ field: Int, _ values: [String: String]) {
        for (name, value) in values.sorted(by: { $0.key < $1.key }) {
            var entry = ProtobufWriter()
            entry.lengthDelimited(1, Array(name.utf8))
            entry.lengthDelimited(2, Array(value.utf8))
            lengthDelimited(field, entry.bytes)
        }
    }
}

/// One field read from the wire: its number and its raw value, read as the message's table says.
public struct ProtobufField: Sendable {
    public enum Value: Sendable, Equatable {
        case varint(UInt64)
        case fixed64(UInt64)
        case lengthDelimited(ArraySlice<UInt8>)
        case fixed32(UInt32)
    }

    public let number: Int
    public let value: Value

    func mismatch(_ wanted: String) -> DeckhandError {
        DeckhandError(.grpcMalformedMessage, "field \(number) is not a \(wanted) on the wire (\(value))")
    }

    var varintValue: UInt64 {
        get throws {
            guard case .varint(let raw) = value else { throw mismatch("varint") }
            return raw
        }
    }

    var payload: ArraySlice<UInt8> {
        get throws {
            guard case .lengthDelimited(let raw) = value else { throw mismatch("length-delimited field") }
            return raw
        }
    }

    public var string: String {
        get throws { String(decoding: try payload, as: UTF8.self) }
    }

    public var bytes: [UInt8] {
        get throws { Array(try payload) }
    }

    public var bool: Bool {
        get throws { try varintValue != 0 }
    }

    public var uint32: UInt32 {
        get throws { UInt32(truncatingIfNeeded: try varintValue) }
    }

    public var uint64: UInt64 {
        get throws { try varintValue }
    }

    /// An `int32` or an enum (a negative one arrives sign-extended to 64 bits).
    public var int32: Int32 {
        get throws { Int32(truncatingIfNeeded: Int64(bitPattern: try varintValue)) }
    }

    public var int64: Int64 {
        get throws { Int64(bitPattern: try varintValue) }
    }

    public var float: Float {
        get throws {
            guard case .fixed32(let raw) = value else { throw mismatch("fixed32") }
            return Float(bitPattern: raw)
        }
    }

    public var double: Double {
        get throws {
            guard case .fixed64(let raw) = value else { throw mismatch("fixed64") }
            return Double(bitPattern: raw)
        }
    }

    public func message<M: ProtobufMessage>(_ type: M.Type = M.self) throws -> M {
        try M(serialized: try payload)
    }

    /// One entry of a `map<string, string>`.
    public var stringMapEntry: (key: String, value: String) {
        get throws {
            var reader = ProtobufReader(Array(try payload))
            var entry = (key: "", value: "")
            while let field = try reader.next() {
                switch field.number {
                case 1: entry.key = try field.string
                case 2: entry.value = try field.string
                default: break
                }
            }
            return entry
        }
    }

    /// The elements of a repeated varint field, packed (one length-delimited run) or not (one element).
    public var packedVarints: [UInt64] {
        get throws {
            switch value {
            case .varint(let raw): return [raw]
            case .lengthDelimited(let run):
                var reader = ProtobufReader(Array(run))
                var values: [UInt64] = []
                while !reader.isAtEnd { values.append(try reader.varint()) }
                return values
            default: throw mismatch("varint or packed run")
            }
        }
    }
}

/// Reads fields in Protocol Buffers' wire format, one at a time.
public struct ProtobufReader: Sendable {
    let bytes: [UInt8]
    var offset = 0

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    var isAtEnd: Bool { offset >= bytes.count }

    func truncated() -> DeckhandError {
        DeckhandError(.grpcMalformedMessage, "the message ends inside a field (at byte \(offset) of \(bytes.count))")
    }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < bytes.count else { throw truncated() }
            let byte = bytes[offset]
            offset += 1
            guard shift < 64 else {
                throw DeckhandError(.grpcMalformedMessage, "a varint longer than 10 bytes at byte \(offset)")
            }
            value |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
    }

    mutating func fixed(_ count: Int) throws -> UInt64 {
        guard offset + count <= bytes.count else { throw truncated() }
        var value: UInt64 = 0
        for index in 0..<count {
            value |= UInt64(bytes[offset + index]) << (8 * UInt64(index))
        }
        offset += count
        return value
    }

    /// The next field, or nil at the end of the message. Groups (wire types 3 and 4, long deprecated) are a
    /// malformed message.
    public mutating func next() throws -> ProtobufField? {
        guard !isAtEnd else { return nil }
        let key = try varint()
        let number = Int(truncatingIfNeeded: key >> 3)
        guard number > 0 else { throw DeckhandError(.grpcMalformedMessage, "a field numbered 0 at byte \(offset)") }
        switch key & 7 {
        case 0: return ProtobufField(number: number, value: .varint(try varint()))
        case 1: return ProtobufField(number: number, value: .fixed64(try fixed(8)))
        case 2:
            let length = try varint()
            guard length <= UInt64(bytes.count - offset) else { throw truncated() }
            let start = offset
            offset += Int(length)
            return ProtobufField(number: number, value: .lengthDelimited(bytes[start..<offset]))
        case 5: return ProtobufField(number: number, value: .fixed32(UInt32(try fixed(4))))
        case let type:
            throw DeckhandError(.grpcMalformedMessage, "field \(number) has wire type \(type), which is not read")
        }
    }
}

extension DeckhandError.Code {
    /// A protobuf message or a gRPC frame that cannot be read.
    public static let grpcMalformedMessage: Self = "GRPC$MALFORMED_MESSAGE"
}
