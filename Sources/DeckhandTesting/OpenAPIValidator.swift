import DeckhandCore
import Foundation

/// Checks HTTP responses against an OpenAPI 3.1 document: the path and method are documented, the status
/// is one of the operation's, the content type is the documented one, and a JSON body matches its schema
/// (the JSON Schema keywords the document uses: `$ref`, `type`, `const`, `enum`, `properties`, `required`,
/// `additionalProperties`, `items`, `minimum`, `maximum`, `minLength`, `maxLength`).
public struct OpenAPIValidator: Sendable {
    public let document: JSONValue

    public init(document: JSONValue) throws {
        guard document["openapi"]?.stringValue?.hasPrefix("3.1") == true, case .object? = document["paths"] else {
            throw DeckhandError(.protocolViolation, "not an OpenAPI 3.1 document")
        }
        self.document = document
    }

    /// What is wrong with the response, or nil when it matches the document.
    public func problem(method: String, path: String, status: Int, contentType: String?, body: [UInt8]) -> String? {
        let bare = String(path.split(separator: "?", maxSplits: 1).first ?? "")
        let errorSchema: JSONValue = ["$ref": "#/components/schemas/Error"]
        guard let template = template(for: bare) else {
            // A path the API does not have: only its 404 error is documented (as every error's shape).
            return status == 404
                ? check(body, contentType, "application/json", errorSchema, "\(method) \(bare)")
                : "\(method) \(bare): undocumented path"
        }
        guard let operation = document["paths"]?[template]?[method.lowercased()] else {
            return status == 404 || status == 405
                ? check(body, contentType, "application/json", errorSchema, "\(method) \(template)")
                : "\(method) \(template): undocumented method"
        }
        guard let response = operation["responses"]?[String(status)] else {
            return "\(method) \(template): status \(status) is not documented"
        }
        guard case .object(let content)? = response["content"], let (type, media) = content.first else { return nil }
        guard let schema = media["schema"] else { return nil }
        return check(body, contentType, type, schema, "\(method) \(template) \(status)")
    }

    private func check(
        _ body: [UInt8],
        _ contentType: String?,
        _ type: String,
        _ schema: JSONValue,
        _ what: String
    )
        -> String?
    {
        guard contentType?.hasPrefix(type) == true else {
            return "\(what): content type \(contentType ?? "none"), documented \(type)"
        }
        guard type == "application/json" else { return nil }
        guard let value = try? JSONValue(parsing: body) else { return "\(what): the body is not JSON" }
        let errors = validate(value, schema, at: "$")
        return errors.isEmpty ? nil : "\(what): " + errors.joined(separator: "; ")
    }

    /// The documented path template that `path` matches (`{name}` matches one segment).
    func template(for path: String) -> String? {
        guard case .object(let paths)? = document["paths"] else { return nil }
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        return paths.keys.sorted().first { template in
            let parts = template.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == segments.count else { return false }
            return zip(parts, segments).allSatisfy { part, segment in
                (part.hasPrefix("{") && part.hasSuffix("}") && !segment.isEmpty) || part == segment
            }
        }
    }

    /// Where `value` departs from `schema` (empty when it does not).
    public func validate(_ value: JSONValue, _ schema: JSONValue, at location: String) -> [String] {
        if let reference = schema["$ref"]?.stringValue {
            let name = String(reference.split(separator: "/").last ?? "")
            guard let resolved = document["components"]?["schemas"]?[name] else {
                return ["\(location): unresolved \(reference)"]
            }
            return validate(value, resolved, at: location)
        }
        if let constant = schema["const"], constant != value { return ["\(location): expected \(constant)"] }
        if case .array(let choices)? = schema["enum"], !choices.contains(value) {
            return ["\(location): \(value) is not one of \(choices.map(\.serialized).joined(separator: ", "))"]
        }
        if let type = schema["type"] {
            let types: [String]
            switch type {
            case .string(let one): types = [one]
            case .array(let many): types = many.compactMap(\.stringValue)
            default: types = []
            }
            guard types.contains(where: { Self.matches(value, $0) }) else {
                return ["\(location): \(Self.kind(of: value)) where \(types.joined(separator: " or ")) is expected"]
            }
        }
        var errors: [String] = []
        switch value {
        case .object(let fields):
            if case .array(let required)? = schema["required"] {
                for key in required.compactMap(\.stringValue) where fields[key] == nil {
                    errors.append("\(location): `\(key)` is missing")
                }
            }
            let properties: [String: JSONValue]
            if case .object(let declared)? = schema["properties"] { properties = declared } else { properties = [:] }
            for (key, field) in fields.sorted(by: { $0.key < $1.key }) {
                if let property = properties[key] {
                    errors += validate(field, property, at: "\(location).\(key)")
                } else if schema["additionalProperties"] == .bool(false) {
                    errors.append("\(location): `\(key)` is not documented")
                } else if let additional = schema["additionalProperties"], case .object = additional {
                    errors += validate(field, additional, at: "\(location).\(key)")
                }
            }
        case .array(let items):
            if let itemSchema = schema["items"] {
                for (index, item) in items.enumerated() {
                    errors += validate(item, itemSchema, at: "\(location)[\(index)]")
                }
            }
        case .number(let number):
            if let minimum = schema["minimum"]?.doubleValue, number < minimum {
                errors.append("\(location): \(number) < \(minimum)")
            }
            if let maximum = schema["maximum"]?.doubleValue, number > maximum {
                errors.append("\(location): \(number) > \(maximum)")
            }
        case .string(let string):
            if let minimum = schema["minLength"]?.intValue, string.count < minimum {
                errors.append("\(location): shorter than \(minimum)")
            }
            if let maximum = schema["maxLength"]?.intValue, string.count > maximum {
                errors.append("\(location): longer than \(maximum)")
            }
        default:
            break
        }
        return errors
    }

    static func matches(_ value: JSONValue, _ type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("number", .number), ("string", .string), ("array", .array),
            ("object", .object):
            return true
        case ("integer", .number(let number)):
            return number.rounded() == number
        default:
            return false
        }
    }

    static func kind(of value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
