import AMQP
import ArgumentParser
import DeckhandCore
import Foundation
import Messaging

/// `deckhand dlq list|show|replay|purge`: the messages that died (`deckhand.dead`), seen and sent again.
struct DeadLettersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "List, show, replay or purge the messages that died (the dead queue).",
        discussion: """
            A command dies when its handler refused it (malformed, or failed on its last attempt) or when workers \
            died holding it too often. Each subcommand takes the dead queue's messages, acts on those it selects \
            and puts the others back; workers may run meanwhile. A replay is confirmed by the broker before the \
            dead copy is removed, so nothing is lost.
            """,
        subcommands: [List.self, Show.self, Replay.self, Purge.self]
    )

    /// Where the dead queue is, and which of its messages a command acts on.
    struct Selection: ParsableArguments {
        @OptionGroup var options: GlobalOptions

        @Option(help: "Prefix of every exchange and queue name (as the workers were given).")
        var namespace = ""

        @Option(help: "Only messages that died in this queue (e.g. conversation.commands).")
        var queue: String?

        @Option(help: "Only messages of this type (e.g. step, provision).")
        var type: String?

        func filter(ids: [String] = []) -> DeadLetterFilter {
            DeadLetterFilter(ids: Set(ids), queue: queue.map(topology.qualified), type: type)
        }

        var topology: Topology { Topology(namespace: namespace) }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the dead messages: id, type, queue, why, attempts and age."
        )

        @OptionGroup var selection: Selection

        @Option(help: "At most this many.")
        var limit = 1000

        func run() async throws {
            let filter = selection.filter()
            try await withDeadLetters(selection) { dead in
                let outcomes = try await dead.sweep(limit: limit) { _ in .keep }
                let now = Date()
                print("ID\tTYPE\tQUEUE\tREASON\tATTEMPTS\tAGE")
                for letter in outcomes.map(\.letter) where filter.matches(letter) {
                    let age = letter.diedAt.map { Self.age(now.timeIntervalSince($0)) } ?? "-"
                    print(
                        "\(letter.id)\t\(letter.type)\t\(letter.queue ?? "-")\t\(letter.reason ?? "-")\t"
                            + "\(letter.attempts)\t\(age)"
                    )
                }
            }
        }

        static func age(_ seconds: TimeInterval) -> String {
            let seconds = max(0, Int(seconds))
            switch seconds {
            case ..<120: return "\(seconds)s"
            case ..<7200: return "\(seconds / 60)m"
            case ..<172_800: return "\(seconds / 3600)h"
            default: return "\(seconds / 86400)d"
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show dead messages whole: properties, headers (the broker's x-death included) and body."
        )

        @OptionGroup var selection: Selection

        @Argument(help: "Message ids (as `deckhand dlq list` shows them).")
        var ids: [String]

        func validate() throws {
            guard !ids.isEmpty else { throw ValidationError("give the id of at least one message") }
        }

        func run() async throws {
            let filter = selection.filter(ids: ids)
            try await withDeadLetters(selection) { dead in
                let shown = try await dead.sweep { _ in .keep }.map(\.letter).filter(filter.matches)
                for letter in shown {
                    let properties = letter.message.properties
                    print("id: \(letter.id)")
                    print("type: \(letter.type)")
                    print("queue: \(letter.queue ?? "-")")
                    print("reason: \(letter.reason ?? "-")")
                    print("died: \(letter.diedAt.map { "\($0)" } ?? "-")")
                    print("attempts: \(letter.attempts)")
                    print("timestamp: \(properties.timestamp.map { "\($0)" } ?? "-")")
                    for (key, value) in properties.headers.sorted(by: { $0.key < $1.key }) {
                        print("header \(key): \(value)")
                    }
                    print("body: \(letter.redactedBody)")
                    print("")
                }
                let missing = Set(ids).subtracting(shown.map(\.id))
                if !missing.isEmpty {
                    fail("no dead message \(missing.sorted().joined(separator: ", "))")
                    throw ExitCode(1)
                }
            }
        }
    }

    /// Which messages a replay or a purge acts on: ids, or `--all` (with the filters of ``Selection``).
    struct Chosen: ParsableArguments {
        @OptionGroup var selection: Selection

        @Argument(help: "Message ids; without, --all or a --queue/--type filter says which.")
        var ids: [String] = []

        @Flag(help: "Every dead message (that the filters select).")
        var all = false

        func validate() throws {
            guard !ids.isEmpty || all || selection.queue != nil || selection.type != nil else {
                throw ValidationError("say which messages: their ids, --queue, --type or --all")
            }
        }

        /// Sweeps the dead queue doing `decision` to the chosen messages and reports each.
        func act(_ decision: DeadLetterQueue.Decision, verb: String) async throws {
            let filter = selection.filter(ids: ids)
            try await withDeadLetters(selection) { dead in
                let outcomes = try await dead.sweep { filter.matches($0) ? decision : .keep }
                try report(outcomes.filter { $0.decision == decision }, verb: verb, ids: ids)
            }
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send dead messages back to the queue they died in, with their attempts counted afresh."
        )

        @OptionGroup var chosen: Chosen

        func run() async throws { try await chosen.act(.replay, verb: "replayed") }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete dead messages for good (needs --yes)."
        )

        @OptionGroup var chosen: Chosen

        @Flag(help: "Confirms that the selected messages are to be deleted for good.")
        var yes = false

        func validate() throws {
            guard yes else {
                throw ValidationError("a purge deletes messages for good: add --yes to confirm")
            }
        }

        func run() async throws { try await chosen.act(.drop, verb: "purged") }
    }
}

/// One line per message acted on, the failures on standard error; exits 1 when one failed or a named id was
/// not there.
private func report(_ outcomes: [DeadLetterQueue.Outcome], verb: String, ids: [String]) throws {
    var failed = false
    for outcome in outcomes {
        if outcome.done {
            print("\(verb) \(outcome.letter.id) (\(outcome.letter.type), \(outcome.letter.queue ?? "-"))")
        } else {
            fail("\(outcome.letter.id) not \(verb): \(outcome.problem ?? "unknown")")
            failed = true
        }
    }
    let missing = Set(ids).subtracting(outcomes.map(\.letter.id))
    if !missing.isEmpty {
        fail("no dead message \(missing.sorted().joined(separator: ", "))")
        failed = true
    }
    if outcomes.isEmpty, ids.isEmpty { print("no dead message selected") }
    if failed { throw ExitCode(1) }
}

private func fail(_ message: String) {
    FileHandle.standardError.write(Data("deckhand dlq: \(message)\n".utf8))
}

/// Runs `body` with the dead queue of the configured broker; a failure is printed and exits 1.
private func withDeadLetters(
    _ selection: DeadLettersCommand.Selection,
    _ body: (DeadLetterQueue) async throws -> Void
) async throws {
    let configuration = try selection.options.loadConfiguration()
    let connection: AMQPConnection
    do {
        connection = try await AMQPConnection.connect(configuration: .init(settings: configuration.amqp, name: "dlq"))
    } catch {
        fail("\((error as? DeckhandError)?.message ?? "\(error)")")
        throw ExitCode(1)
    }
    do {
        try await body(DeadLetterQueue(connection: connection, topology: selection.topology))
        await connection.close()
    } catch let exit as ExitCode {
        await connection.close()
        throw exit
    } catch {
        await connection.close()
        fail("\((error as? DeckhandError)?.message ?? "\(error)")")
        throw ExitCode(1)
    }
}
