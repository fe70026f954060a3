import ArgumentParser
import DeckhandCore
import DeckhandTesting
import Foundation

/// One measured figure.
struct BenchmarkResult: Codable {
    var name: String
    var value: Double
    var unit: String
    /// The figure this machine should reach (see bench/README.md), if there is one.
    var target: Double?
    /// Whether the target is a ceiling (latency, memory) rather than a floor (throughput).
    var lowerIsBetter = false

    init(name: String, value: Double, unit: String, target: Double?, lowerIsBetter: Bool = false) {
        self.name = name
        self.value = value
        self.unit = unit
        self.target = target
        self.lowerIsBetter = lowerIsBetter
    }

    var met: Bool? { target.map { lowerIsBetter ? value <= $0 : value >= $0 } }
}

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deckhand-bench",
        abstract: "Deckhand's benchmarks against the local services (deploy/local/services.sh start first).",
        subcommands: [
            Foundation.self, Sandbox.self, Runtime.self, Conversation.self, GatewayBench.self, ClusterBench.self,
            RuntimeAPIBench.self, ModalBench.self,
        ]
    )
}

extension Bench {
    struct Foundation: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "foundation",
            abstract: "AMQP publish and consume rates, PostgreSQL insert rates, HTTP requests through libcurl."
        )

        @Option(help: "Messages to publish and consume.") var messages = 50_000
        @Option(help: "Concurrent publishing tasks.") var publishers = 256
        @Option(help: "Consumer prefetch.") var prefetch = 500
        @Option(help: "Rows per PostgreSQL insert method.") var rows = 5000
        @Option(help: "HTTP requests to send.") var requests = 100_000
        @Option(help: "Concurrent HTTP requests.") var concurrency = 64

        func run() async throws {
            var results: [BenchmarkResult] = []
            results += try await AMQPBenchmark.run(messages: messages, publishers: publishers, prefetch: prefetch)
            // 0.8 × CLIBS.md's figures for the same methods.
            let targets: [String: Double] = ["autocommit": 2_320, "transaction": 9_360, "pipeline": 94_400]
            for (name, rate) in try await PostgresBenchmark.run(url: TestEnvironment.postgresURL, rows: rows) {
                results.append(
                    BenchmarkResult(name: "postgres.insert.\(name)", value: rate, unit: "rows/s", target: targets[name])
                )
            }
            let http = try await HTTPBenchmark.run(concurrency: concurrency, requests: requests)
            results += [
                BenchmarkResult(
                    name: "http.requests.concurrency_\(concurrency)",
                    value: http.requestsPerSecond,
                    unit: "req/s",
                    target: 14_000
                ),
                BenchmarkResult(name: "http.latency.p50", value: http.p50Milliseconds, unit: "ms", target: nil),
                BenchmarkResult(name: "http.latency.p99", value: http.p99Milliseconds, unit: "ms", target: nil),
            ]
            report(results)
        }
    }
}

extension Bench {
    struct Sandbox: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sandbox",
            abstract: "deckhand-sandbox: start to /alive, idle RSS, echo round trips, concurrent reads."
        )

        @Option(help: "The deckhand-sandbox binary (default: beside this one).") var binary: String?
        @Option(help: "Sequential `echo hi` calls.") var calls = 1000
        @Option(help: "Concurrent `read` calls.") var reads = 32

        func run() async throws {
            let path =
                binary
                ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("deckhand-sandbox").path
            report(try await SandboxBenchmark.run(binary: path, calls: calls, concurrentReads: reads))
        }
    }
}

extension Bench {
    struct Runtime: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "runtime",
            abstract: "Provisioning through a runtime worker: cold (process, docker) and warm claims, publish to ready."
        )

        @Option(help: "Cold process-sandbox provisions.") var coldProcess = 30
        @Option(help: "Cold Docker provisions (0 skips Docker).") var coldDocker = 20
        @Option(help: "Warm claims.") var warm = 100
        @Option(help: "Warm pool size.") var pool = 4

        func run() async throws {
            report(
                try await RuntimeBenchmark.run(coldProcess: coldProcess, coldDocker: coldDocker, warm: warm, pool: pool)
            )
        }
    }
}

extension Bench {
    struct Conversation: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "conversation",
            abstract: "Conversation workers: per-step overhead, steps/s for 1, 2 and 4 worker processes, idle RSS."
        )

        @Option(help: "Steps measured for the per-step overhead.") var steps = 200
        @Option(help: "Steps per conversation in the overhead run (a longer history costs each step more).")
        var length = 20
        @Flag(help: "Measure only the per-step overhead (no throughput runs, no idle memory).") var overheadOnly = false
        @Option(help: "Conversations at once in the throughput runs.") var conversations = 32
        @Option(help: "Steps per conversation in the throughput runs.") var conversationSteps = 8
        @Option(help: "Steps in flight per worker process in the throughput runs.") var prefetch = 4

        func run() async throws {
            report(
                try await ConversationBenchmark.run(
                    steps: steps,
                    length: length,
                    overheadOnly: overheadOnly,
                    throughputConversations: conversations,
                    throughputSteps: conversationSteps,
                    prefetch: prefetch
                )
            )
        }
    }
}

extension Bench {
    struct GatewayBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gateway",
            abstract:
                "The gateway: POST …/message ingest, a two-step conversation end to end, idle WebSocket memory, fan-out."
        )

        @Option(help: "Messages posted in the ingest run.") var requests = 50_000
        @Option(help: "Concurrent HTTP requests in the ingest run.") var concurrency = 64
        @Option(help: "Conversations timed end to end.") var runs = 20
        @Option(help: "Idle WebSocket clients.") var idleClients = 1000
        @Option(help: "WebSocket subscribers of one conversation in the fan-out run.") var subscribers = 100
        @Option(help: "Events published in the fan-out run.") var events = 2000

        func run() async throws {
            report(
                try await GatewayBenchmark.run(
                    requests: requests,
                    concurrency: concurrency,
                    endToEndRuns: runs,
                    idleClients: idleClients,
                    subscribers: subscribers,
                    events: events
                )
            )
        }
    }
}

extension Bench {
    struct ClusterBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cluster",
            abstract:
                "deploy/cluster.sh: conversations/s and step latency with 1, 2 and 3 nodes, node death to running again."
        )

        @Option(help: "Conversations at once in each round.") var conversations = 32
        @Option(help: "Commands per conversation (the death round's are twice as long).") var steps = 8
        @Option(help: "The scripted model's latency per answer, in milliseconds.") var latency = 200
        @Option(help: "runtime.node_lease of every node, in seconds.") var lease = 10

        func run() async throws {
            report(
                try await ClusterBenchmark.run(
                    conversations: conversations,
                    steps: steps,
                    latency: latency,
                    lease: lease
                )
            )
        }
    }
}

extension Bench {
    struct RuntimeAPIBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "runtime-api",
            abstract:
                "deckhand runtime-api: /start to ready and first echo, cold and warm; a conversation on remote sandboxes."
        )

        @Option(help: "Starts of new sessions in each of the cold and warm runs.") var starts = 30
        @Option(help: "Warm pool size of the warm run.") var pool = 4
        @Option(help: "Conversations timed end to end on remote sandboxes.") var runs = 20

        func run() async throws {
            report(try await RuntimeAPIBenchmark.run(starts: starts, pool: pool, endToEndRuns: runs))
        }
    }
}

extension Bench {
    struct ModalBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "modal",
            abstract:
                "The modal backend: create to /alive and a first echo, against the fake Modal server or (--live) Modal."
        )

        @Option(help: "Sandboxes made one after the other.") var sandboxes = 10
        @Flag(
            help:
                "Use Modal itself: MODAL_TOKEN_ID, MODAL_TOKEN_SECRET and DECKHAND_MODAL_IMAGE (the sandbox image in a registry Modal can pull) from the environment. Costs money; every sandbox is terminated."
        )
        var live = false

        func run() async throws {
            var settings: ModalSettings?
            if live {
                let reader = try ConfigurationReader(environment: ProcessInfo.processInfo.environment)
                let modal = try ModalSettings(reader: reader)
                guard modal.isConfigured, modal.image != nil else {
                    throw DeckhandError(
                        .invalidConfiguration,
                        "--live needs MODAL_TOKEN_ID, MODAL_TOKEN_SECRET and DECKHAND_MODAL_IMAGE"
                    )
                }
                settings = modal
            }
            report(try await ModalBenchmark.run(sandboxes: sandboxes, live: settings))
        }
    }
}

/// Prints a table and one JSON line.
func report(_ results: [BenchmarkResult]) {
    print(
        "benchmark".padding(toLength: 40, withPad: " ", startingAt: 0)
            + "value".padding(toLength: 16, withPad: " ", startingAt: 0) + "target"
    )
    for result in results {
        let value = String(format: result.value < 100 ? "%.2f %@" : "%.0f %@", result.value, result.unit)
        let target =
            result.target.map {
                let bound = result.lowerIsBetter ? "≤" : "≥"
                return "\(bound) \(String(format: "%.0f", $0)) \(result.unit) \(result.met == true ? "ok" : "MISSED")"
            } ?? "-"
        print(
            result.name.padding(toLength: 40, withPad: " ", startingAt: 0)
                + value.padding(toLength: 16, withPad: " ", startingAt: 0) + target
        )
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    if let data = try? encoder.encode(results) { print(String(decoding: data, as: UTF8.self)) }
}
