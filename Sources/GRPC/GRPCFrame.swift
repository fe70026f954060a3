import DeckhandCore

/// gRPC's length-prefixed messages: a compressed flag byte (always 0 here: nothing is compressed), a 4-byte
/// big-endian length, the message.
public enum GRPCFrame {
    /// The largest message read (Modal's clients allow 100 MiB; nothing Deckhand reads comes near).
    public static let maximumLength = 64 << 20

    /// One message framed.
    public static func encode(_ message: [UInt8]) -> [UInt8] {
        let length = UInt32(message.count)
        return [0, UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)]
            + message
    }
}

/// Cuts a body that arrives in pieces into whole messages.
public struct GRPCFrameDecoder: Sendable {
    var buffer: [UInt8] = []

    public init() {}

    /// Whether a message has begun and not ended (a stream that stops here was cut).
    public var isInsideMessage: Bool { !buffer.isEmpty }

    /// Takes the next piece of the body and returns the messages it completes.
    public mutating func feed(_ piece: some Collection<UInt8>) throws -> [[UInt8]] {
        buffer.append(contentsOf: piece)
        var messages: [[UInt8]] = []
        var start = 0
        while buffer.count - start >= 5 {
            guard buffer[start] == 0 else {
                throw DeckhandError(
                    .grpcMalformedMessage,
                    "a compressed gRPC message (flag \(buffer[start])): none was asked for"
                )
            }
            let length =
                Int(buffer[start + 1]) << 24 | Int(buffer[start + 2]) << 16 | Int(buffer[start + 3]) << 8
                | Int(buffer[start + 4])
            guard length <= GRPCFrame.maximumLength else {
                throw DeckhandError(.grpcMalformedMessage, "a gRPC message of \(length) bytes is over the limit")
            }
            guard buffer.count - start - 5 >= length else { break }
            messages.append(Array(buffer[(start + 5)..<(start + 5 + length)]))
            start += 5 + length
        }
        buffer.removeFirst(start)
        return messages
    }
}
