/// A small raw DEFLATE (RFC 1951) encoder for the zips `/download_files` sends: greedy LZ77 matching over a
/// 32 KiB window with hash chains, written as one block of the fixed Huffman code.
///
/// It trades ratio for simplicity (no dynamic Huffman tables); text typically shrinks to a third or less.
enum Deflate {
    static func compress(_ input: [UInt8]) -> [UInt8] {
        var writer = BitWriter()
        writer.write(1, count: 1)  // final block
        writer.write(1, count: 2)  // fixed Huffman
        let windowSize = 1 << 15
        let hashSize = 1 << 15
        var head = [Int](repeating: -1, count: hashSize)
        var previous = [Int](repeating: -1, count: windowSize)
        let maximumChain = 64
        var index = 0

        func hash(_ at: Int) -> Int {
            (Int(input[at]) << 10 ^ Int(input[at + 1]) << 5 ^ Int(input[at + 2])) & (hashSize - 1)
        }
        func insert(_ at: Int) {
            guard at + 2 < input.count else { return }
            let key = hash(at)
            previous[at & (windowSize - 1)] = head[key]
            head[key] = at
        }

        while index < input.count {
            var bestLength = 0
            var bestDistance = 0
            if index + 2 < input.count {
                var candidate = head[hash(index)]
                var chain = 0
                let longest = min(258, input.count - index)
                while candidate >= 0, index - candidate <= windowSize, chain < maximumChain {
                    if input[candidate + bestLength] == input[index + bestLength] || bestLength == 0 {
                        var length = 0
                        while length < longest, input[candidate + length] == input[index + length] { length += 1 }
                        if length > bestLength {
                            bestLength = length
                            bestDistance = index - candidate
                            if length == longest { break }
                        }
                    }
                    let next = previous[candidate & (windowSize - 1)]
                    guard next < candidate else { break }
                    candidate = next
                    chain += 1
                }
            }
            if bestLength >= 3 {
                writer.writeLength(bestLength)
                writer.writeDistance(bestDistance)
                for position in index..<(index + bestLength) { insert(position) }
                index += bestLength
            } else {
                writer.writeSymbol(Int(input[index]))
                insert(index)
                index += 1
            }
        }
        writer.writeSymbol(256)
        return writer.finish()
    }

    struct BitWriter {
        var bytes: [UInt8] = []
        var buffer: UInt64 = 0
        var count = 0

        /// Appends the low `count` bits of `value`, least significant first.
        mutating func write(_ value: Int, count bits: Int) {
            buffer |= UInt64(value) << UInt64(count)
            count += bits
            while count >= 8 {
                bytes.append(UInt8(truncatingIfNeeded: buffer))
                buffer >>= 8
                count -= 8
            }
        }

        /// Appends a Huffman code, which DEFLATE stores most significant bit first.
        mutating func writeCode(_ code: Int, length: Int) {
            var reversed = 0
            for bit in 0..<length where code & (1 << bit) != 0 { reversed |= 1 << (length - 1 - bit) }
            write(reversed, count: length)
        }

        /// A literal/length symbol in the fixed code.
        mutating func writeSymbol(_ symbol: Int) {
            switch symbol {
            case 0..<144: writeCode(0x30 + symbol, length: 8)
            case 144..<256: writeCode(0x190 + symbol - 144, length: 9)
            case 256..<280: writeCode(symbol - 256, length: 7)
            default: writeCode(0xC0 + symbol - 280, length: 8)
            }
        }

        mutating func writeLength(_ length: Int) {
            var code = Deflate.lengthBase.count - 1
            while Deflate.lengthBase[code] > length { code -= 1 }
            writeSymbol(257 + code)
            write(length - Deflate.lengthBase[code], count: Deflate.lengthExtra[code])
        }

        mutating func writeDistance(_ distance: Int) {
            var code = Deflate.distanceBase.count - 1
            while Deflate.distanceBase[code] > distance { code -= 1 }
            writeCode(code, length: 5)
            write(distance - Deflate.distanceBase[code], count: Deflate.distanceExtra[code])
        }

        mutating func finish() -> [UInt8] {
            if count > 0 { bytes.append(UInt8(truncatingIfNeeded: buffer)) }
            return bytes
        }
    }

    static let lengthBase = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227,
        258,
    ]
    static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097,
        6145, 8193, 12289, 16385, 24577,
    ]
    static let distanceExtra = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
    ]
}
