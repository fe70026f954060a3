import Foundation

/// The parts of a libpq connection URL that logs and errors need, without ever showing the password.
struct PostgresURL: Sendable {
    /// The URL as given (handed to libpq only).
    let raw: String
    /// The password as written in the URL and percent-decoded, to scrub from messages.
    private let secrets: [String]
    /// The URL with the password replaced by `***`.
    let redacted: String
    /// How many hosts the URL names (`postgresql://u:p@a:5432,b:5432/db`: 2).
    let hostCount: Int

    init(_ raw: String) {
        self.raw = raw
        var secrets: [String] = []
        var redacted = raw
        if let schemeEnd = raw.range(of: "://") {
            let rest = raw[schemeEnd.upperBound...]
            let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
            let authority = rest[..<authorityEnd]
            if let at = authority.lastIndex(of: "@") {
                let userInfo = authority[..<at]
                if let colon = userInfo.firstIndex(of: ":") {
                    let password = String(userInfo[userInfo.index(after: colon)...])
                    if !password.isEmpty {
                        secrets.append(password)
                        if let decoded = password.removingPercentEncoding, decoded != password {
                            secrets.append(decoded)
                        }
                        redacted =
                            String(raw[..<schemeEnd.upperBound]) + userInfo[..<colon] + ":***"
                            + String(rest[at...])
                    }
                }
            }
        }
        if let password = raw.range(of: "password=") {
            let value = raw[password.upperBound...].prefix(while: { $0 != "&" && $0 != " " })
            if !value.isEmpty {
                secrets.append(String(value))
                redacted = redacted.replacingOccurrences(of: "password=" + value, with: "password=***")
            }
        }
        self.secrets = secrets.sorted { $0.count > $1.count }
        self.redacted = redacted
        var hosts = 1
        if let schemeEnd = raw.range(of: "://") {
            let rest = raw[schemeEnd.upperBound...]
            let authority = rest[..<(rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex)]
            let addresses = authority.lastIndex(of: "@").map { authority[authority.index(after: $0)...] } ?? authority
            hosts = max(1, addresses.split(separator: ",").count)
        }
        self.hostCount = hosts
    }

    /// `text` with every occurrence of the password replaced by `***`.
    func scrub(_ text: String) -> String {
        var text = text
        for secret in secrets where secret.count >= 1 {
            text = text.replacingOccurrences(of: secret, with: "***")
        }
        return text
    }
}
