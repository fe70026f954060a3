import DeckhandCore
import Foundation

/// A `/metrics` text read by Prometheus' own Python client (scripts/metrics/check.py, in the virtual
/// environment scripts/metrics/venv.sh makes): a text its parser refuses fails the test.
public enum PrometheusText {
    /// One family as the parser read it.
    public struct Family: Sendable, Equatable {
        public var type: String
        public var samples: [String]
        /// Each sample's labels, as sorted JSON objects.
        public var labels: [String]
    }

    /// The families of `text` by name (a counter's without its `_total`, as the parser names them).
    public static func families(_ text: String) async throws -> [String: Family] {
        let python = try TestEnvironment.tool("DECKHAND_METRICS_PYTHON", madeBy: "scripts/metrics/venv.sh")
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-\(UUID()).txt")
        try Data(text.utf8).write(to: input)
        defer { try? FileManager.default.removeItem(at: input) }
        let (status, output) = try await TestEnvironment.launchDetached(
            python,
            [TestEnvironment.repositoryRoot + "/scripts/metrics/check.py", input.path]
        )
        let last = output.split(separator: "\n").last.map(String.init) ?? ""
        guard status == 0, case .object(let families)? = try? JSONValue(parsing: Array(last.utf8))["families"] else {
            throw DeckhandError(
                .protocolViolation,
                "Prometheus' parser refused the text (\(status)): \(output.suffix(1500))\n--- text:\n\(text.prefix(3000))"
            )
        }
        return families.mapValues { family in
            Family(
                type: family["type"]?.stringValue ?? "",
                samples: family["samples"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                labels: family["labels"]?.arrayValue?.compactMap(\.stringValue) ?? []
            )
        }
    }
}
