import DeckhandCore
import Foundation

/// OpenHands' own parsers (`event_from_dict` of openhands-ai, in the virtual environment that
/// `scripts/openhands/venv.sh` makes): a shape OpenHands' client cannot read is a defect even when our own
/// tests pass.
public enum OpenHandsParsers {
    /// What OpenHands made of each event: its class (nil when it failed) and, for each failure, why.
    public struct Verdict: Sendable {
        public var classes: [String?]
        public var failures: [String]
    }

    /// Parses `events` (events as the API streams them, or observations as a sandbox server answers) with
    /// OpenHands' classes.
    public static func check(_ events: [JSONValue]) async throws -> Verdict {
        let python = try TestEnvironment.tool("DECKHAND_OPENHANDS_PYTHON", madeBy: "scripts/openhands/venv.sh")
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("openhands-\(UUID()).json")
        try Data(JSONValue.array(events).serialized.utf8).write(to: input)
        defer { try? FileManager.default.removeItem(at: input) }
        let (status, output) = try await TestEnvironment.launchDetached(
            python,
            [TestEnvironment.repositoryRoot + "/scripts/openhands/check.py", input.path],
            environment: ["LITELLM_LOCAL_MODEL_COST_MAP": "True"]
        )
        let last = output.split(separator: "\n").last.map(String.init) ?? ""
        guard status == 0, let answer = try? JSONValue(parsing: last), case .array(let classes)? = answer["classes"],
            case .array(let failures)? = answer["failures"]
        else {
            throw DeckhandError(.internalError, "scripts/openhands/check.py exited \(status): \(output.suffix(2000))")
        }
        return Verdict(
            classes: classes.map(\.stringValue),
            failures: failures.map { failure in
                "\(failure["kind"]?.stringValue ?? "?") (#\(failure["index"]?.intValue ?? -1)): "
                    + (failure["error"]?.stringValue ?? "?")
            }
        )
    }
}
