/// W3C trace-context `traceparent` values, and the one of the work in progress: a request's (the gateway
/// continues a caller's or starts one) or a command's (a worker's handler runs within its delivery's). Every
/// command sent within that work continues its trace with a span of its own, so one trace id follows a
/// request through the gateway, the conversation worker's steps, the runtime worker and the sandbox.
public enum Traceparent {
    /// The trace context of the work this task does.
    @TaskLocal public static var current: String?

    /// The trace id of `traceparent` (32 hex digits), or nil when it is not a W3C `traceparent`.
    public static func traceID(of traceparent: String) -> String? {
        let fields = traceparent.split(separator: "-", omittingEmptySubsequences: false)
        guard fields.count == 4, fields[0].count == 2, fields[1].count == 32, fields[2].count == 16,
            fields[3].count == 2, fields.allSatisfy({ $0.allSatisfy(\.isHexDigit) }),
            fields[1] != Substring(repeating: "0", count: 32), fields[0] != "ff"
        else { return nil }
        return fields[1].lowercased()
    }

    /// A span of `parent`'s trace: its trace id and flags, a new span id; a new trace when `parent` is not a
    /// `traceparent`.
    public static func child(of parent: String) -> String {
        guard let trace = traceID(of: parent) else { return make() }
        var generator = SystemRandomNumberGenerator()
        let flags = parent.split(separator: "-")[3].lowercased()
        return "00-\(trace)-\(hex([generator.next()]))-\(flags)"
    }

    /// A new trace: `00-<32 hex trace id>-<16 hex span id>-01`. Three draws from the system's generator
    /// (one `getrandom` each), not one per digit: the gateway makes one per command.
    public static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        let trace = hex([generator.next(), generator.next()])
        return "00-\(trace)-\(hex([generator.next()]))-01"
    }

    /// `words` as lower-case hex, 16 digits each.
    static func hex(_ words: [UInt64]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(16 * words.count)
        for word in words {
            for shift in stride(from: 60, through: 0, by: -4) {
                text.append(digits[Int((word >> UInt64(shift)) & 0xf)])
            }
        }
        return String(decoding: text, as: UTF8.self)
    }
}
