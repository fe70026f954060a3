import DeckhandCore
import GRPC
import HTTPClient
import Testing

/// The protobuf wire codec, gRPC's framing and how a status is read from a response, without I/O.
@Suite struct GRPCWireTests {
    /// A message with one field of each kind the codec writes, for round trips.
    struct Everything: ProtobufMessage, Equatable {
        var text = ""
        var negative: Int32 = 0
        var big: UInt64 = 0
        var signed64: Int64 = 0
        var ratio: Float = 0
        var precise: Double = 0
        var flag = false
        var words: [String] = []
        var map: [String: String] = [:]
        var nested: [Everything] = []
        var maybe: UInt32?

        func encode(to writer: inout ProtobufWriter) {
            writer.string(1, text)
            writer.int32(2, negative)
            writer.uint64(3, big)
            writer.int64(4, signed64)
            writer.float(5, ratio)
            writer.double(6, precise)
            writer.bool(7, flag)
            writer.strings(8, words)
            writer.stringMap(9, map)
            writer.messages(10, nested)
            writer.optionalUInt32(21, maybe)
        }

        mutating func decode(_ field: ProtobufField) throws {
            switch field.number {
            case 1: text = try field.string
            case 2: negative = try field.int32
            case 3: big = try field.uint64
            case 4: signed64 = try field.int64
            case 5: ratio = try field.float
            case 6: precise = try field.double
            case 7: flag = try field.bool
            case 8: words.append(try field.string)
            case 9:
                let entry = try field.stringMapEntry
                map[entry.key] = entry.value
            case 10: nested.append(try field.message())
            case 21: maybe = try field.uint32
            default: break
            }
        }
    }

    @Test func everyKindOfFieldRoundTrips() throws {
        var inner = Everything()
        inner.text = "inner"
        inner.negative = -7
        let message = Everything(
            text: "héllo",
            negative: Int32.min,
            big: UInt64.max,
            signed64: -1,
            ratio: 55,
            precise: 1.7e9,
            flag: true,
            words: ["a", "", "c"],
            map: ["b": "2", "a": ""],
            nested: [inner, Everything()],
            maybe: 0
        )
        let bytes = message.serialized()
        #expect(try Everything(serialized: bytes) == message)
        #expect(Everything().serialized().isEmpty, "zero values are left out")
        // A field numbered 21 takes a two-byte key: (21 << 3 | 0) = 168 → A8 01; present at zero.
        #expect(bytes.suffix(3) == [0xa8, 0x01, 0x00])
        // −1 as int32 is sign-extended to ten bytes.
        var minusOne = Everything()
        minusOne.negative = -1
        #expect(minusOne.serialized() == [0x10] + Array(repeating: 0xff, count: 9) + [0x01])
    }

    @Test func fieldsOfEveryWireTypeThatAreNotKnownAreSkipped() throws {
        var writer = ProtobufWriter()
        writer.uint64(99, 300)  // varint
        writer.double(98, 2.5)  // fixed64
        writer.string(97, "unknown")  // length-delimited
        writer.float(96, 1.5)  // fixed32
        writer.string(1, "known")
        writer.strings(8, ["w"])
        let read = try Everything(serialized: writer.bytes)
        #expect(read.text == "known")
        #expect(read.words == ["w"])
    }

    @Test func malformedMessagesAreErrorsNotCrashes() throws {
        let cases: [[UInt8]] = [
            [0x0a, 0x05, 0x61],  // a string longer than what is left
            [0x10],  // a key without its varint
            [0x10] + Array(repeating: 0xff, count: 11),  // a varint over ten bytes
            [0x0b],  // wire type 3 (a group)
            [0x00, 0x01],  // field number 0
            [0x2d, 0x00, 0x00],  // a fixed32 cut short
        ]
        for bytes in cases {
            let error = #expect(throws: DeckhandError.self, "\(bytes)") { try Everything(serialized: bytes) }
            #expect(error?.code == .grpcMalformedMessage)
        }
        // The right field number with the wrong wire type says so.
        var writer = ProtobufWriter()
        writer.string(2, "not a varint")
        let mismatch = #expect(throws: DeckhandError.self) { try Everything(serialized: writer.bytes) }
        #expect(mismatch?.message.contains("field 2") == true)
    }

    @Test func framesAreCutFromABodyThatArrivesInPieces() throws {
        let one = GRPCFrame.encode([1, 2, 3])
        let two = GRPCFrame.encode([])
        let three = GRPCFrame.encode(Array(repeating: 7, count: 300))
        #expect(one == [0, 0, 0, 0, 3, 1, 2, 3])
        let body = one + two + three
        var decoder = GRPCFrameDecoder()
        var messages: [[UInt8]] = []
        for byte in body {
            messages += try decoder.feed([byte])
        }
        #expect(messages == [[1, 2, 3], [], Array(repeating: 7, count: 300)])
        #expect(!decoder.isInsideMessage)
        var cut = GRPCFrameDecoder()
        #expect(try cut.feed(three.prefix(100)).isEmpty)
        #expect(cut.isInsideMessage, "a stream that stops here was cut")
        var compressed = GRPCFrameDecoder()
        #expect(throws: DeckhandError.self) { try compressed.feed([1, 0, 0, 0, 0]) }
        var huge = GRPCFrameDecoder()
        #expect(throws: DeckhandError.self) { try huge.feed([0, 0x7f, 0xff, 0xff, 0xff]) }
    }

    @Test func theStatusComesFromTheTrailersOrATrailersOnlyAnswer() throws {
        let ok = GRPCStatus(status: 200, headers: [:], trailers: ["grpc-status": "0", "grpc-message": ""])
        #expect(ok.code == .ok)
        let trailersOnly = GRPCStatus(
            status: 200,
            headers: ["content-type": "application/grpc", "grpc-status": "5", "grpc-message": "no%20such%20sandbox"],
            trailers: [:]
        )
        #expect(trailersOnly.code == .notFound)
        #expect(trailersOnly.message == "no such sandbox")
        let cut = GRPCStatus(status: 200, headers: ["content-type": "application/grpc"], trailers: [:])
        #expect(cut.code == .unavailable, "no status: the stream was cut, and may be tried again")
        #expect(cut.isTransient)
        #expect(GRPCStatus(status: 503, headers: [:], trailers: [:]).code == .unavailable)
        #expect(GRPCStatus(status: 401, headers: [:], trailers: [:]).code == .unauthenticated)
        #expect(GRPCStatus(status: 404, headers: [:], trailers: [:]).code == .unimplemented)
        let detailed = GRPCStatus(
            status: 200,
            headers: [:],
            trailers: ["grpc-status": "8", "grpc-status-details-bin": "CAgSBHNsb3c"]  // unpadded base64
        )
        #expect(detailed.code == .resourceExhausted)
        #expect(detailed.details == [0x08, 0x08, 0x12, 0x04, 0x73, 0x6c, 0x6f, 0x77])
        #expect(GRPCStatus(status: 200, headers: [:], trailers: ["grpc-status": "42"]).code == .unknown)
    }

    @Test func statusesMapToDeckhandsCodes() {
        #expect(GRPCStatus(.unavailable, "").deckhandError(calling: "X").code == .unavailable)
        #expect(GRPCStatus(.resourceExhausted, "").deckhandError(calling: "X").code == .unavailable)
        #expect(GRPCStatus(.deadlineExceeded, "").deckhandError(calling: "X").code == .timeout)
        let notFound = GRPCStatus(.notFound, "no such app").deckhandError(calling: "AppGetOrCreate")
        #expect(notFound.code == "GRPC$NOT_FOUND")
        #expect(notFound.message == "AppGetOrCreate failed: NOT_FOUND: no such app")
        for code in GRPCStatus.Code.allCases where code != .ok {
            #expect(!GRPCStatus(code, "").deckhandError(calling: "X").code.rawValue.isEmpty)
        }
    }
}
