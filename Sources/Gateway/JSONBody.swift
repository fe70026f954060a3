import DeckhandCore
import Foundation
import Hummingbird
import NIOCore

/// A JSON request body read strictly: at most `limit` bytes (413), valid JSON (400), an object (422) with
/// only the `allowed` fields (422, naming the unknown one), each read with its type checked (422, naming it).
struct JSONBody {
    let fields: [String: JSONValue]
    /// Whether the request had a body at all (an empty one reads as no fields).
    let hasBody: Bool

    init(_ request: Request, limit: Int, allowed: Set<String>) async throws {
        let buffer = try await request.body.collect(upTo: limit)
        guard buffer.readableBytes > 0 else {
            fields = [:]
            hasBody = false
            return
        }
        hasBody = true
        // A page of any site can POST text/plain without asking (no CORS preflight); only a JSON content type
        // proves the caller could set headers, which a foreign page cannot without the gateway's consent.
        guard Self.isJSON(request.headers[.contentType]) else {
            throw APIError(
                .unsupportedMediaType,
                .requestNotJSON,
                "send the body as JSON with `Content-Type: application/json`"
            )
        }
        let value: JSONValue
        do {
            value = try JSONValue(parsing: buffer.readableBytesView)
        } catch {
            throw APIError(.badRequest, .requestMalformedJSON, "the body is not valid JSON: \(error.message)")
        }
        guard case .object(let fields) = value else {
            throw APIError.invalidField("the body must be a JSON object")
        }
        if let unknown = fields.keys.filter({ !allowed.contains($0) }).sorted().first {
            throw APIError.invalidField(
                "unknown field `\(unknown)` (allowed: \(allowed.sorted().joined(separator: ", ")))"
            )
        }
        self.fields = fields
    }

    /// Whether a `Content-Type` is JSON: `application/json` (parameters allowed) or a `+json` type.
    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        let type = (contentType.split(separator: ";", maxSplits: 1).first ?? "").lowercased()
            .filter { $0 != " " && $0 != "\t" }
        return type == "application/json" || type.hasSuffix("+json")
    }

    /// The value of `key`, nil when absent or null.
    private func value(_ key: String) -> JSONValue? {
        guard let value = fields[key], !value.isNull else { return nil }
        return value
    }

    func string(_ key: String, maxLength: Int = 1 << 20) throws -> String? {
        guard let value = value(key) else { return nil }
        guard let string = value.stringValue else { throw APIError.invalidField("`\(key)` must be a string") }
        // Counted in code points, as JSON Schema's maxLength counts (not in grapheme clusters).
        guard string.unicodeScalars.count <= maxLength else {
            throw APIError.invalidField("`\(key)` is longer than \(maxLength) characters")
        }
        return string
    }

    func int(_ key: String, range: ClosedRange<Int>) throws -> Int? {
        guard let value = value(key) else { return nil }
        guard let number = value.doubleValue, number.rounded() == number, let int = Int(exactly: number),
            range.contains(int)
        else {
            throw APIError.invalidField("`\(key)` must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return int
    }

    func double(_ key: String, range: ClosedRange<Double>) throws -> Double? {
        guard let value = value(key) else { return nil }
        guard let number = value.doubleValue, range.contains(number) else {
            throw APIError.invalidField("`\(key)` must be a number in \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    func strings(_ key: String) throws -> [String]? {
        guard let value = value(key) else { return nil }
        guard case .array(let items) = value else {
            throw APIError.invalidField("`\(key)` must be an array of strings")
        }
        return try items.map { item in
            guard let string = item.stringValue else {
                throw APIError.invalidField("`\(key)` must be an array of strings")
            }
            return string
        }
    }

    func object(_ key: String) throws -> [String: JSONValue]? {
        guard let value = value(key) else { return nil }
        guard case .object(let object) = value else { throw APIError.invalidField("`\(key)` must be an object") }
        return object
    }

    func raw(_ key: String) -> JSONValue? { value(key) }
}
