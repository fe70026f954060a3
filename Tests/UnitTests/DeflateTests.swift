import DeckhandCore
import Testing

@testable import SandboxServer

@Suite struct DeflateTests {
    private static func roundTrip(_ data: [UInt8]) throws -> [UInt8] {
        try Inflate.decompress(Deflate.compress(data), expectedSize: data.count, limit: data.count)
    }

    @Test func roundTripsEmptyTinyRepetitiveAndNoisyData() throws {
        #expect(try Self.roundTrip([]) == [])
        #expect(try Self.roundTrip([42]) == [42])
        let text = Array(String(repeating: "the quick brown fox jumps over the lazy dog\n", count: 500).utf8)
        let compressed = Deflate.compress(text)
        #expect(compressed.count < text.count / 10)
        #expect(try Self.roundTrip(text) == text)
        #expect(try Self.roundTrip([UInt8](repeating: 7, count: 100_000)) == [UInt8](repeating: 7, count: 100_000))
        var state: UInt64 = 1
        let noise: [UInt8] = (0..<100_000).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        #expect(try Self.roundTrip(noise) == noise)
        // Matches at the far end of the 32 KiB window.
        let far = noise[0..<40_000] + noise[0..<40_000]
        #expect(try Self.roundTrip(Array(far)) == Array(far))
    }

    @Test func inflateRejectsCorruptDataAndOverflow() {
        #expect(throws: (any Error).self) { try Inflate.decompress([0xFF, 0xFF, 0xFF]) }
        #expect(throws: (any Error).self) { try Inflate.decompress([]) }
        let text = Array(String(repeating: "abc", count: 1000).utf8)
        #expect(throws: (any Error).self) { try Inflate.decompress(Deflate.compress(text), limit: 100) }
    }

    @Test func crc32MatchesTheKnownValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    }

    @Test func somethingThatIsNotAZipIsRefusedBeforeAnythingIsWritten() {
        let error = #expect(throws: DeckhandError.self) {
            try Archive.extract(zip: Array("not a zip at all, just text".utf8), into: "/nonexistent/never-created")
        }
        #expect(error?.code == .archiveMalformed)
    }

    @Test func entryNamesThatClimbOutAreRefused() {
        #expect(Archive.safeRelativePath("a/b/../c") == "a/c")
        #expect(Archive.safeRelativePath("./") == "")
        #expect(Archive.safeRelativePath("../evil") == nil)
        #expect(Archive.safeRelativePath("a/../../evil") == nil)
        #expect(Archive.safeRelativePath("/etc/passwd") == nil)
        #expect(Archive.safeRelativePath("..\\evil") == nil)
        #expect(Archive.safeRelativePath("C:/evil") == nil)
    }
}
