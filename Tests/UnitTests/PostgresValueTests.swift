import DeckhandCore
import Foundation
import Postgres
import Testing

@Suite struct PostgresValueTests {
    private func text(_ value: PostgresValue) -> String? {
        value.wireBytes.map { String(decoding: $0, as: UTF8.self) }
    }

    private func row(_ values: [String?], types: [UInt32], names: [String]? = nil) -> PostgresRow {
        PostgresRow(
            columns: PostgresColumns(names: names ?? values.indices.map { "c\($0)" }, types: types),
            values: values
        )
    }

    @Test func encodesEveryCaseWithItsTypeAndFormat() {
        let id = UUID(uuidString: "0F6C2E1A-1D3B-4C5D-9E8F-0A1B2C3D4E5F")!
        #expect(text(.text("héllo")) == "héllo")
        #expect(PostgresValue.text("x").typeOID == 0)
        #expect(text(.int(-42)) == "-42")
        #expect(PostgresValue.int(1).typeOID == PostgresType.int8)
        #expect(text(.bool(true)) == "t")
        #expect(text(.bool(false)) == "f")
        #expect(text(.double(1.5)) == "1.5")
        #expect(text(.double(.infinity)) == "Infinity")
        #expect(text(.double(-.infinity)) == "-Infinity")
        #expect(text(.double(.nan)) == "NaN")
        #expect(text(.uuid(id)) == "0F6C2E1A-1D3B-4C5D-9E8F-0A1B2C3D4E5F")
        #expect(PostgresValue.uuid(id).typeOID == PostgresType.uuid)
        #expect(text(.jsonb(Data("{\"a\":1}".utf8))) == "{\"a\":1}")
        #expect(PostgresValue.jsonb("{}").typeOID == PostgresType.jsonb)
        #expect(PostgresValue.bytea([0, 255, 10]).wireBytes == [0, 255, 10])
        #expect(PostgresValue.bytea([]).format == 1)
        #expect(PostgresValue.text("x").format == 0)
        #expect(PostgresValue.null.wireBytes == nil)
        let literals: [PostgresValue] = ["s", 3, true, 2.5, nil]
        #expect(literals == [.text("s"), .int(3), .bool(true), .double(2.5), .null])
    }

    @Test func timestampsAreUTCWithMicroseconds() throws {
        #expect(text(.timestamptz(Date(timeIntervalSince1970: 0))) == "1970-01-01 00:00:00.000000+00")
        let date = Date(timeIntervalSince1970: 1_795_840_514.123456)
        #expect(text(.timestamptz(date)) == "2026-11-28 04:35:14.123456+00")
        #expect(text(.timestamptz(Date(timeIntervalSince1970: -1.5))) == "1969-12-31 23:59:58.500000+00")
        #expect(text(.timestamptz(Date(timeIntervalSince1970: 951_782_400))) == "2000-02-29 00:00:00.000000+00")
    }

    @Test func decodesTimestampsInEveryOffsetForm() throws {
        let expected = 1_795_840_514.123456
        let forms = [
            "2026-11-28 04:35:14.123456+00", "2026-11-28 06:35:14.123456+02", "2026-11-28 10:05:14.123456+05:30",
            "2026-11-28 01:05:14.123456-03:30", "2026-11-28 04:35:14.123456",
        ]
        for form in forms {
            let date = try row([form], types: [PostgresType.timestamptz]).decode(Date.self, 0)
            #expect(abs(date.timeIntervalSince1970 - expected) < 0.000_001, "\(form)")
        }
        let whole = try row(["2026-11-28 04:35:14+00"], types: [PostgresType.timestamptz]).decode(Date.self, 0)
        #expect(whole.timeIntervalSince1970 == 1_795_840_514)
        let short = try row(["2026-11-28 04:35:14.5+00"], types: [PostgresType.timestamptz]).decode(Date.self, 0)
        #expect(short.timeIntervalSince1970 == 1_795_840_514.5)
        #expect(try row(["infinity"], types: [PostgresType.timestamptz]).decode(Date.self, 0) == .distantFuture)
        #expect(throws: DeckhandError.self) {
            try row(["2026-13-28 04:35:14+00"], types: [PostgresType.timestamptz]).decode(Date.self, 0)
        }
        let now = Date()
        let roundTrip = try row([text(.timestamptz(now))], types: [PostgresType.timestamptz]).decode(Date.self, 0)
        #expect(abs(roundTrip.timeIntervalSince1970 - now.timeIntervalSince1970) < 0.000_001)
    }

    @Test func decodesScalarsByNameAndIndex() throws {
        let id = UUID()
        let r = row(
            ["hello", "9000000000", "-7", "t", "2.25", id.uuidString.lowercased(), "\\x00ff0a", "{\"k\": [1, 2]}"],
            types: [
                PostgresType.text, PostgresType.int8, PostgresType.int4, PostgresType.bool, PostgresType.float8,
                PostgresType.uuid, PostgresType.bytea, PostgresType.jsonb,
            ],
            names: ["s", "big", "small", "flag", "ratio", "id", "blob", "doc"]
        )
        #expect(try r.decode(String.self, "s") == "hello")
        #expect(try r.decode(Int64.self, "big") == 9_000_000_000)
        #expect(try r.decode(Int.self, 1) == 9_000_000_000)
        #expect(try r.decode(Int32.self, "small") == -7)
        #expect(try r.decode(Bool.self, "flag"))
        #expect(try r.decode(Double.self, "ratio") == 2.25)
        #expect(try r.decode(UUID.self, "id") == id)
        #expect(try r.decode([UInt8].self, "blob") == [0, 255, 10])
        #expect(try r.decode(Data.self, "blob") == Data([0, 255, 10]))
        #expect(try r.decode(String.self, "doc") == "{\"k\": [1, 2]}")
        #expect(try r.decode(Data.self, "doc") == Data("{\"k\": [1, 2]}".utf8))
        struct Doc: Decodable, Equatable { var k: [Int] }
        #expect(try r.decodeJSON(Doc.self, "doc") == Doc(k: [1, 2]))
        #expect(try r.decode(String?.self, "s") == "hello")
    }

    @Test func nullDecodesOnlyIntoOptionals() throws {
        let r = row([nil], types: [PostgresType.int8], names: ["maybe"])
        #expect(try r.decode(Int?.self, "maybe") == nil)
        #expect(try r.decode(String?.self, 0) == nil)
        do {
            _ = try r.decode(Int.self, "maybe")
            Issue.record("NULL decoded into a non-optional")
        } catch let error as DeckhandError {
            #expect(error.code == .postgresDecode)
            #expect(error.message.contains("\"maybe\""))
        }
    }

    @Test func mismatchesNameTheColumn() throws {
        let r = row(["abc", "1"], types: [PostgresType.text, PostgresType.int4], names: ["word", "one"])
        for attempt in [
            { _ = try r.decode(Int.self, "word") }, { _ = try r.decode(Bool.self, "one") },
            { _ = try r.decode(UUID.self, "word") }, { _ = try r.decode(Date.self, "word") },
            { _ = try r.decodeJSON([Int].self, "word") },
        ] as [() throws -> Void] {
            do {
                try attempt()
                Issue.record("a mismatch decoded")
            } catch let error as DeckhandError {
                #expect(error.code == .postgresDecode)
                #expect(error.message.contains("\"word\"") || error.message.contains("\"one\""))
            }
        }
        #expect(throws: DeckhandError.self) { try r.decode(Int.self, "missing") }
        #expect(throws: DeckhandError.self) { try r.decode(Int.self, 5) }
        let badHex = row(["\\x0g"], types: [PostgresType.bytea])
        #expect(throws: DeckhandError.self) { try badHex.decode([UInt8].self, 0) }
    }

    @Test func redactsThePassword() {
        let url = "postgresql://deckhand:s3cr%40t@db.example:5432/deckhand?sslmode=disable"
        let redacted = PostgresClient.redact(url)
        #expect(redacted == "postgresql://deckhand:***@db.example:5432/deckhand?sslmode=disable")
        #expect(!redacted.contains("s3cr"))
        #expect(PostgresClient.redact("postgresql://u@h/db") == "postgresql://u@h/db")
    }
}
