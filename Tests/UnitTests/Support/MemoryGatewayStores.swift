import DeckhandCore
import DeckhandStore
import Foundation
import Synchronization

@testable import Gateway

/// ``ConversationRecords`` in memory, for unit tests of the gateway's routes (the PostgreSQL one is tested
/// through the integration tests of the same routes).
final class MemoryConversationRecords: ConversationRecords {
    struct Row: Sendable {
        var summary: ConversationSummary
        var userID: UUID
        var agentState: AgentState?
        var holdsSandbox = false
        var events: [(id: Int, json: String)] = []
        var deleting = false
    }

    private let rows = Mutex<[UUID: Row]>([:])
    private let made = Atomic<Int>(0)

    var count: Int { rows.withLock { $0.count } }

    /// The row as the API sees it: nil once it is being deleted.
    func row(_ id: UUID) -> Row? { rows.withLock { $0[id] }.flatMap { $0.deleting ? nil : $0 } }

    func update(_ id: UUID, _ change: (inout Row) -> Void) {
        rows.withLock { rows in
            if var row = rows[id] {
                change(&row)
                rows[id] = row
            }
        }
    }

    func create(_ new: ConversationStore.NewConversation) async throws -> Bool {
        // A creation order that sorts as text, and passes for a cursor's time.
        let order = String(format: "%012d", made.add(1, ordering: .relaxed).newValue)
        return rows.withLock { rows in
            guard rows[new.id] == nil else { return false }
            rows[new.id] = Row(
                summary: ConversationSummary(
                    id: new.id,
                    title: new.title,
                    createdAt: order,
                    updatedAt: order,
                    status: "STARTING",
                    selectedRepository: new.selectedRepository,
                    selectedBranch: new.selectedBranch,
                    gitProvider: new.gitProvider,
                    trigger: new.trigger,
                    agentState: AgentState.loading.rawValue,
                    llmModel: new.llmModel,
                    cursor: PageCursor(createdAt: order, id: new.id)
                ),
                userID: new.userID,
                agentState: .loading
            )
            return true
        }
    }

    func remove(_ conversation: UUID) async throws {
        _ = rows.withLock { $0.removeValue(forKey: conversation) }
    }

    func owner(of conversation: UUID) async throws -> UUID? { row(conversation)?.userID }

    func usage(_ user: UUID) async throws -> UserLimits.Usage {
        rows.withLock { rows in
            let mine = rows.values.filter { $0.userID == user }
            return UserLimits.Usage(
                running: mine.filter { $0.agentState.map(AgentStateMachine.atWork.contains) ?? false }.count,
                sandboxes: mine.filter(\.holdsSandbox).count
            )
        }
    }

    func standing(_ conversation: UUID, user: UUID) async throws -> ConversationStanding? {
        guard let row = row(conversation), row.userID == user else { return nil }
        return ConversationStanding(
            agentState: row.agentState,
            holdsSandbox: row.holdsSandbox,
            usage: try await usage(user)
        )
    }

    func summary(_ conversation: UUID, user: UUID) async throws -> ConversationSummary? {
        guard let row = row(conversation), row.userID == user else { return nil }
        return row.summary
    }

    func list(
        user: UUID,
        after cursor: PageCursor?,
        limit: Int
    ) async throws -> (page: [ConversationSummary], more: Bool) {
        let mine = rows.withLock { rows in
            rows.values.filter { $0.userID == user && !$0.deleting }.map(\.summary)
                .sorted { ($0.cursor.createdAt, $0.id.uuidString) > ($1.cursor.createdAt, $1.id.uuidString) }
        }
        let after = mine.filter { summary in
            guard let cursor else { return true }
            return (summary.cursor.createdAt, summary.id.uuidString) < (cursor.createdAt, cursor.id.uuidString)
        }
        return (Array(after.prefix(limit)), after.count > limit)
    }

    func markDeleting(_ conversation: UUID, user: UUID, _ deleting: Bool) async throws -> Bool {
        rows.withLock { rows in
            guard rows[conversation]?.userID == user else { return false }
            rows[conversation]?.deleting = deleting
            return true
        }
    }

    func rename(_ conversation: UUID, user: UUID, title: String) async throws -> Bool {
        rows.withLock { rows in
            guard rows[conversation]?.userID == user, rows[conversation]?.deleting == false else { return false }
            rows[conversation]?.summary.title = title
            return true
        }
    }

    func events(
        _ conversation: UUID,
        from start: Int,
        through end: Int?,
        reverse: Bool,
        limit: Int
    ) async throws -> [(id: Int, json: String)] {
        let events = (row(conversation)?.events ?? []).filter { $0.id >= start && $0.id <= (end ?? Int.max) }
        return Array((reverse ? events.reversed() : events).prefix(limit))
    }
}

/// The broker as the conversation routes see it: commands kept in order, a switch for a lost connection and
/// one for a broker that refuses.
final class MemoryCommands: ConversationCommandSending {
    struct Sent: Sendable {
        var command: ConversationCommand
        var payload: JSONValue
        var userID: String
    }

    let connected = Atomic<Bool>(true)
    let refusing = Atomic<Bool>(false)
    private let sent = Mutex<[Sent]>([])

    var all: [Sent] { sent.withLock { $0 } }

    func requireConnected() throws {
        guard connected.load(ordering: .relaxed) else {
            throw DeckhandError(.unavailable, "RabbitMQ is not connected")
        }
    }

    func send<Payload: Encodable & Sendable>(
        _ command: ConversationCommand,
        _ payload: Payload,
        userID: String
    ) async throws {
        if refusing.load(ordering: .relaxed) { throw DeckhandError("AMQP$NACKED", "the broker refused the message") }
        let json = try JSONValue(parsing: String(decoding: try JSONEncoder().encode(payload), as: UTF8.self))
        sent.withLock { $0.append(Sent(command: command, payload: json, userID: userID)) }
    }
}

/// API keys in memory: a key is its user's.
struct MemoryKeys: APIKeyChecking {
    let users: [String: UUID]

    func authenticate(_ key: String, hash: [UInt8]) async throws -> Principal? {
        users[key].map { Principal(userID: $0) }
    }
}
