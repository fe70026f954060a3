import DeckhandCore

/// A raw DEFLATE (RFC 1951) decoder, for the `deflate` entries of zips: stored, fixed and dynamic Huffman blocks.
///
/// Pure Swift, so a sandbox needs neither zlib nor `unzip`. It decodes canonical Huffman codes bit by bit (the
/// approach of zlib's `puff.c`): simple and strict rather than fast.
struct Inflate {
    private let input: [UInt8]
    private var position = 0
    private var bitBuffer: UInt32 = 0
    private var bitCount = 0
    private var output: [UInt8] = []
    private let limit: Int

    /// Decodes `input`; throws on malformed data or when the output would pass `limit` bytes.
    static func decompress(_ input: [UInt8], expectedSize: Int? = nil, limit: Int = .max) throws -> [UInt8] {
        var inflater = Inflate(input: input, limit: limit)
        if let expectedSize { inflater.output.reserveCapacity(min(expectedSize, limit)) }
        try inflater.run()
        return inflater.output
    }

    private init(input: [UInt8], limit: Int) {
        self.input = input
        self.limit = limit
    }

    private static func malformed(_ why: String) -> DeckhandError {
        DeckhandError(.archiveMalformed, "The archive's compressed data is corrupt: \(why).")
    }

    private mutating func run() throws {
        var last = false
        repeat {
            last = try bits(1) == 1
            switch try bits(2) {
            case 0: try stored()
            case 1: try codes(length: Self.fixedLength, distance: Self.fixedDistance)
            case 2:
                let (length, distance) = try dynamicTables()
                try codes(length: length, distance: distance)
            default: throw Self.malformed("a block of the reserved type 3")
            }
        } while !last
    }

    private mutating func bits(_ count: Int) throws -> Int {
        var value = bitBuffer
        while bitCount < count {
            guard position < input.count else { throw Self.malformed("the data ends early") }
            value |= UInt32(input[position]) << UInt32(bitCount)
            position += 1
            bitCount += 8
        }
        bitBuffer = count == 32 ? 0 : value >> UInt32(count)
        bitCount -= count
        return Int(value & ((1 << UInt32(count)) - 1))
    }

    private mutating func stored() throws {
        bitBuffer = 0
        bitCount = 0
        guard position + 4 <= input.count else { throw Self.malformed("a stored block ends early") }
        let length = Int(input[position]) | Int(input[position + 1]) << 8
        let complement = Int(input[position + 2]) | Int(input[position + 3]) << 8
        guard length == ~complement & 0xFFFF else { throw Self.malformed("a stored block's length check fails") }
        position += 4
        guard position + length <= input.count else { throw Self.malformed("a stored block ends early") }
        try reserve(length)
        output += input[position..<(position + length)]
        position += length
    }

    private func reserve(_ count: Int) throws {
        guard output.count + count <= limit else {
            throw DeckhandError(.archiveMalformed, "An archive entry expands beyond its declared size.")
        }
    }

    /// A canonical Huffman code: how many codes of each length, and the symbols in code order.
    struct Huffman {
        var counts = [Int](repeating: 0, count: 16)
        var symbols: [Int]

        init(lengths: ArraySlice<Int>) throws {
            symbols = [Int](repeating: 0, count: lengths.count)
            for length in lengths { counts[length] += 1 }
            var left = 1
            for length in 1..<16 {
                left <<= 1
                left -= counts[length]
                guard left >= 0 else { throw Inflate.malformed("an over-subscribed Huffman code") }
            }
            var offsets = [Int](repeating: 0, count: 16)
            for length in 1..<15 { offsets[length + 1] = offsets[length] + counts[length] }
            for (symbol, length) in lengths.enumerated() where length != 0 {
                symbols[offsets[length]] = symbol
                offsets[length] += 1
            }
        }
    }

    private mutating func decode(_ code: Huffman) throws -> Int {
        var value = 0
        var first = 0
        var index = 0
        for length in 1..<16 {
            value |= try bits(1)
            let count = code.counts[length]
            if value - count < first { return code.symbols[index + (value - first)] }
            index += count
            first += count
            first <<= 1
            value <<= 1
        }
        throw Self.malformed("a Huffman code that decodes to nothing")
    }

    private static let fixedLength: Huffman = {
        var lengths = [Int](repeating: 8, count: 288)
        for symbol in 144..<256 { lengths[symbol] = 9 }
        for symbol in 256..<280 { lengths[symbol] = 7 }
        return try! Huffman(lengths: lengths[...])
    }()
    private static let fixedDistance: Huffman = try! Huffman(lengths: [Int](repeating: 5, count: 30)[...])

    private mutating func codes(length: Huffman, distance: Huffman) throws {
        while true {
            var symbol = try decode(length)
            if symbol < 256 {
                try reserve(1)
                output.append(UInt8(symbol))
            } else if symbol == 256 {
                return
            } else {
                symbol -= 257
                guard symbol < 29 else { throw Self.malformed("an invalid length code") }
                let count = Deflate.lengthBase[symbol] + (try bits(Deflate.lengthExtra[symbol]))
                let distanceSymbol = try decode(distance)
                guard distanceSymbol < 30 else { throw Self.malformed("an invalid distance code") }
                let back = Deflate.distanceBase[distanceSymbol] + (try bits(Deflate.distanceExtra[distanceSymbol]))
                guard back <= output.count else { throw Self.malformed("a distance too far back") }
                try reserve(count)
                var from = output.count - back
                for _ in 0..<count {
                    output.append(output[from])
                    from += 1
                }
            }
        }
    }

    private mutating func dynamicTables() throws -> (Huffman, Huffman) {
        let lengthCount = try bits(5) + 257
        let distanceCount = try bits(5) + 1
        let codeCount = try bits(4) + 4
        guard lengthCount <= 286, distanceCount <= 30 else { throw Self.malformed("too many Huffman codes") }
        let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
        var codeLengths = [Int](repeating: 0, count: 19)
        for index in 0..<codeCount { codeLengths[order[index]] = try bits(3) }
        let lengthCode = try Huffman(lengths: codeLengths[...])
        var lengths = [Int](repeating: 0, count: lengthCount + distanceCount)
        var index = 0
        while index < lengths.count {
            let symbol = try decode(lengthCode)
            if symbol < 16 {
                lengths[index] = symbol
                index += 1
                continue
            }
            var value = 0
            let repeats: Int
            switch symbol {
            case 16:
                guard index > 0 else { throw Self.malformed("a repeat with nothing before it") }
                value = lengths[index - 1]
                repeats = 3 + (try bits(2))
            case 17: repeats = 3 + (try bits(3))
            default: repeats = 11 + (try bits(7))
            }
            guard index + repeats <= lengths.count else { throw Self.malformed("too many code lengths") }
            for _ in 0..<repeats {
                lengths[index] = value
                index += 1
            }
        }
        guard lengths[256] != 0 else { throw Self.malformed("no end-of-block code") }
        return (
            try Huffman(lengths: lengths[0..<lengthCount]),
            try Huffman(lengths: lengths[lengthCount...])
        )
    }
}

/// CRC-32 (IEEE 802.3, as zip uses it).
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
