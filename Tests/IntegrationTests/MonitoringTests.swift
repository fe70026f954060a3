import ConversationWorker
import DeckhandCore
import DeckhandTesting
import Foundation
import Messaging
import Testing

/// `deploy/monitoring` (issue 18): the alert rules pass Prometheus' own checker and their unit tests
/// (`promtool`, from Debian's package), every Grafana panel's query is valid PromQL, and both read only metric
/// families Deckhand exports.
struct MonitoringTests {
    static func promtool(
        _ arguments: [String],
        directory: String = TestEnvironment.repositoryRoot
    ) async throws -> String {
        let promtool = try TestEnvironment.tool("DECKHAND_PROMTOOL", madeBy: "scripts/monitoring/promtool.sh")
        let (status, output) = try await TestEnvironment.launchDetached(promtool, arguments, directory: directory)
        guard status == 0 else {
            throw DeckhandError(.invalidConfiguration, "promtool \(arguments.joined(separator: " ")): \(output)")
        }
        return output
    }

    /// The families the roles export (RoleEndpoint, GatewayMetrics, the workers' swift-metrics), without the
    /// suffixes Prometheus' text format adds (`_total`, `_bucket`, `_sum`, `_count`).
    static let exported: Set<String> = [
        StepMetrics.label, StepMetrics.phaseLabel, StepMetrics.modelCallsLabel, StepMetrics.modelTokensLabel,
        StepMetrics.watchdogLabel, DrainingConsumer.waitLabel, "deckhand_sandbox_provisions_total",
        "deckhand_warm_pool_sandboxes", "deckhand_queue_messages", "deckhand_queue_consumers",
        "deckhand_amqp_connected",
        "deckhand_amqp_reconnects_total", "deckhand_postgres_pool_connections", "deckhand_postgres_pool_waiting",
        "deckhand_postgres_pool_waits_total", "deckhand_http_requests_total", "deckhand_http_request_duration_seconds",
        "deckhand_gateway_commands_total", "deckhand_gateway_streams", "deckhand_gateway_streams_cut_total",
    ]

    /// The `deckhand_*` names `text` reads, each reduced to its family.
    static func families(in text: String) -> Set<String> {
        let pattern = try! Regex("deckhand_[a-z_]+")
        return Set(
            text.matches(of: pattern).map { match -> String in
                var name = String(text[match.range])
                for suffix in ["_bucket", "_count", "_sum"] where name.hasSuffix(suffix) && !exported.contains(name) {
                    name.removeLast(suffix.count)
                }
                return name
            }
        )
    }

    static func file(_ path: String) throws -> String {
        try String(contentsOfFile: TestEnvironment.repositoryRoot + "/" + path, encoding: .utf8)
    }

    /// The rules pass `promtool check rules` and `promtool test rules` (each alert fires on the series meant to
    /// raise it, with its summary, and stays quiet before).
    @Test func theAlertRulesPassPromtoolAndTheirUnitTests() async throws {
        let checked = try await Self.promtool(["check", "rules", "deploy/monitoring/deckhand-rules.yml"])
        #expect(checked.contains("SUCCESS: 10 rules found"), "\(checked)")
        let tested = try await Self.promtool(
            ["test", "rules", "deckhand-rules.test.yml"],
            directory: TestEnvironment.repositoryRoot + "/deploy/monitoring"
        )
        #expect(tested.contains("SUCCESS"), "\(tested)")
    }

    /// Every panel's query is valid PromQL (checked as a recording rule by promtool), and the dashboard and the
    /// rules read only families Deckhand exports.
    @Test func theDashboardsQueriesAreValidAndReadExportedFamilies() async throws {
        let text = try Self.file("deploy/monitoring/grafana-dashboard.json")
        let dashboard = try JSONValue(parsing: text)
        let panels = try #require(dashboard["panels"]?.arrayValue)
        #expect(panels.count >= 15)
        var rules = "groups:\n  - name: dashboard\n    rules:\n"
        var count = 0
        for panel in panels {
            let targets = panel["targets"]?.arrayValue ?? []
            #expect(!targets.isEmpty, "\(panel["title"]?.stringValue ?? "?") has a query")
            for target in targets {
                let expression = try #require(target["expr"]?.stringValue)
                count += 1
                rules +=
                    "      - record: dashboard:query_\(count)\n        expr: \(JSONValue.string(expression).serialized)\n"
            }
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try rules.write(toFile: directory + "/dashboard.yml", atomically: true, encoding: .utf8)
        let checked = try await Self.promtool(["check", "rules", directory + "/dashboard.yml"])
        #expect(checked.contains("SUCCESS: \(count) rules found"), "\(checked)")

        let read = Self.families(in: text).union(
            Self.families(in: try Self.file("deploy/monitoring/deckhand-rules.yml"))
        )
        #expect(read.subtracting(Self.exported).isEmpty, "not exported: \(read.subtracting(Self.exported).sorted())")
        // The families an operator needs most are on the dashboard.
        for needed in ["deckhand_queue_messages", "deckhand_queue_wait_seconds", "deckhand_step_seconds"] {
            #expect(Self.families(in: text).contains(needed), "\(needed) is on the dashboard")
        }
    }
}
