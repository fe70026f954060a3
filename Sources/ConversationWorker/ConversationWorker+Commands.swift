import Agent
import DeckhandCore
import DeckhandStore
import Foundation
import Logging
import Messaging
import Postgres

/// What one command's transaction did, for the work that follows its commit.
struct CommandOutcome: Sendable {
    /// Events stored, to publish.
    var events: [Event] = []
    /// A step chain started at this step.
    var startedStep: Int?
    /// The sandbox must be asked for.
    var wantsSandbox = false
}

extension ConversationWorker {
    /// ``ConversationStore/startChain(_:_:from:)`` and the `agent_state_changed: running` event: what to publish after the commit.
    static func startChainRecorded(
        _ connection: PostgresConnection,
        _ id: UUID,
        from states: [AgentState],
        masker: SecretMasker
    ) throws -> CommandOutcome? {
        guard let step = try ConversationStore.startChain(connection, id, from: states) else { return nil }
        var outcome = CommandOutcome()
        outcome.startedStep = step
        outcome.events = try ConversationStore.append(
            connection,
            id,
            [.stateChanged(.running)],
            step: nil,
            masker: masker
        )
        return outcome
    }

    /// Publishes what a command committed: its events, the first step of a chain it started, the request for
    /// a sandbox.
    func follow(_ outcome: CommandOutcome, conversation: UUID) async throws {
        try await publish(outcome.events, conversation: conversation)
        if let step = outcome.startedStep { try await publishStep(step, conversation: conversation) }
        if outcome.wantsSandbox { try await requestSandbox(conversation) }
    }

    // MARK: start

    /// Opens the conversation (its first events once), moves the agent to `loading` and asks for the
    /// sandbox; `sandbox_ready` continues. Idempotent: a started conversation is only woken again.
    func start(_ command: ConversationStart, logger: Logger) async throws {
        let id = command.conversationID
        let replay: JSONValue?
        do {
            replay = try command.replayJSON.map { .array(try Replay.actions(from: $0).map(\.json)) }
        } catch {
            throw MalformedCommand(description: "replay_json: \(error)")
        }
        let masker = self.masker(for: nil)
        let outcome = try await store.postgres.transaction { connection -> CommandOutcome? in
            guard let record = try ConversationStore.conversation(connection, id, lock: true) else { return nil }
            var events: [Event] = []
            let opening = record.eventCount == 0
            if opening {
                let prompt = SystemPrompt.make(instructions: command.conversationInstructions)
                events.append(.system(prompt, tools: CodeActTools.json))
                if let text = command.initialUserMessage, !text.isEmpty {
                    events.append(.userMessage(text, imageURLs: command.imageURLs ?? []))
                }
                try ConversationStore.storeOpening(
                    connection,
                    id,
                    instructions: command.conversationInstructions,
                    replay: replay
                )
            }
            var outcome = CommandOutcome()
            guard let transition = AgentStateMachine.apply(.start, in: record.agentState) else {
                // A chain runs: it asks for the sandbox itself when it needs one.
                outcome.events = try ConversationStore.append(connection, id, events, step: nil, masker: masker)
                return outcome
            }
            let pendingTask = (opening && !(command.initialUserMessage ?? "").isEmpty) || record.resumeOnReady
            if opening || record.agentState != transition.to { events.append(.stateChanged(transition.to)) }
            try ConversationStore.moveToLoading(connection, id, resumeOnReady: pendingTask)
            outcome.events = try ConversationStore.append(connection, id, events, step: nil, masker: masker)
            outcome.wantsSandbox = transition.effects.contains(.requestSandbox)
            return outcome
        }
        guard let outcome else {
            logger.warning("start for a conversation that does not exist: dropped")
            return
        }
        try await follow(outcome, conversation: id)
    }

    // MARK: message

    /// Appends a user message (once per message id); starts a chain when the agent is idle, and wakes a
    /// stopped conversation. A message that arrives while a chain runs is read by its next step.
    func message(_ command: UserMessage, messageID: String, logger: Logger) async throws {
        let id = command.conversationID
        let masker = self.masker(for: nil)
        let outcome = try await store.postgres.transaction { connection -> CommandOutcome? in
            let fresh = try ConversationStore.markProcessed(
                connection,
                consumer: Self.consumerName,
                messageID: messageID
            )
            guard fresh, let record = try ConversationStore.conversation(connection, id, lock: true) else {
                return nil
            }
            var events: [Event] = [.userMessage(command.content, imageURLs: command.imageURLs ?? [])]
            var outcome = CommandOutcome()
            // Without a transition the message is only stored: a running chain reads it at its next step, a
            // paused agent when it resumes.
            if let transition = AgentStateMachine.apply(.message, in: record.agentState) {
                if transition.effects.contains(.startChain) {
                    if let step = try ConversationStore.startChain(connection, id, from: [record.agentState]) {
                        events.append(.stateChanged(transition.to))
                        outcome.startedStep = step
                    }
                } else if transition.to != record.agentState {
                    events.append(.stateChanged(transition.to))
                    try ConversationStore.moveToLoading(connection, id, resumeOnReady: true)
                } else {
                    try ConversationStore.resumeOnReady(connection, id)
                }
                outcome.wantsSandbox = transition.effects.contains(.requestSandbox)
            }
            outcome.events = try ConversationStore.append(connection, id, events, step: nil, masker: masker)
            return outcome
        }
        guard let outcome else {
            // Handled before (or the conversation is gone): its events may never have been published, and the
            // chain it may have started must still run.
            guard let record = try await store.conversation(id) else { return }
            try await republishTail(record)
            try await ensureChainPublished(record)
            return
        }
        try await follow(outcome, conversation: id)
    }

    // MARK: pause, resume, stop, delete

    /// Moves the agent from one of `from` to `state` with an `agent_state_changed` event; nil when it is in
    /// none of them (so the command was already applied, or does not apply).
    func transition(
        _ id: UUID,
        from: [AgentState],
        to state: AgentState,
        status: ConversationStatus? = nil
    ) async throws
        -> [Event]?
    {
        let masker = self.masker(for: nil)
        return try await store.postgres.transaction { connection -> [Event]? in
            guard try ConversationStore.transition(connection, id, from: from, to: state, status: status) else {
                return nil
            }
            return try ConversationStore.append(connection, id, [.stateChanged(state)], step: nil, masker: masker)
        }
    }

    /// The agent stops after the action in progress; its step chain ends there.
    func pause(_ id: UUID) async throws {
        guard let events = try await transition(id, from: AgentStateMachine.sources(of: .pause), to: .paused)
        else { return try await republishTail(id) }
        try await publish(events, conversation: id)
    }

    /// A paused agent runs again, with a new step.
    func resume(_ id: UUID) async throws {
        let masker = self.masker(for: nil)
        let outcome = try await store.postgres.transaction { connection -> CommandOutcome in
            try Self.startChainRecorded(connection, id, from: AgentStateMachine.sources(of: .resume), masker: masker)
                ?? CommandOutcome()
        }
        try await follow(outcome, conversation: id)
        try await ensureChainPublished(id)
    }

    /// The agent stops and the sandbox is stopped (its files kept); `start` or a message wakes both.
    func stop(_ id: UUID) async throws {
        let events = try await transition(
            id,
            from: AgentStateMachine.sources(of: .stop),
            to: .stopped,
            status: .stopped
        )
        if let events { try await publish(events, conversation: id) } else { try await republishTail(id) }
        try await bus.send(RuntimeCommand.stop.rawValue, SandboxTarget(conversationID: id), to: topology.runtimeQueue)
    }

    /// The sandbox is destroyed and the conversation removed with its events.
    func delete(_ id: UUID) async throws {
        try await bus.send(
            RuntimeCommand.destroy.rawValue,
            SandboxTarget(conversationID: id),
            to: topology.runtimeQueue
        )
        try await store.remove(id)
    }

    // MARK: From the runtime workers

    /// The sandbox answers: a `loading` agent goes on with its task, or waits for the user. A sandbox other
    /// than the conversation's earlier one replaces a lost one: an `error` observation (`AGENT_ERROR$WORKSPACE_LOST`)
    /// tells the user and the agent that the files are gone.
    func sandboxReady(_ ready: SandboxReady, logger: Logger) async throws {
        let id = ready.conversationID
        let masker = self.masker(for: nil)
        let outcome = try await store.postgres.transaction { connection -> CommandOutcome? in
            guard let record = try ConversationStore.conversation(connection, id, lock: true) else { return nil }
            var outcome = CommandOutcome()
            guard record.agentState != .stopped else { return outcome }
            var notice: [Event] = []
            if let earlier = record.sandboxID, earlier != ready.sandboxID {
                notice = try ConversationStore.append(
                    connection,
                    id,
                    [.errorObservation(Self.workspaceLost, errorID: Self.workspaceLostID)],
                    step: nil,
                    masker: masker
                )
            }
            outcome.events = notice
            try ConversationStore.sandboxReady(connection, id, sandbox: ready.sandboxID)
            let input = AgentStateMachine.Input.sandboxReady(pendingTask: record.resumeOnReady)
            guard let transition = AgentStateMachine.apply(input, in: record.agentState) else { return outcome }
            if transition.effects.contains(.startChain),
                let started = try Self.startChainRecorded(connection, id, from: [record.agentState], masker: masker)
            {
                outcome = started
                outcome.events = notice + started.events
            } else if !transition.effects.contains(.startChain) {
                try ConversationStore.setAgentState(connection, id, transition.to)
                outcome.events += try ConversationStore.append(
                    connection,
                    id,
                    [.stateChanged(transition.to)],
                    step: nil,
                    masker: masker
                )
            }
            return outcome
        }
        guard let outcome else {
            logger.notice("a sandbox is ready for a conversation that no longer exists: destroying it")
            try await bus.send(
                RuntimeCommand.destroy.rawValue,
                SandboxTarget(sandboxID: ready.sandboxID),
                to: topology.runtimeQueue
            )
            return
        }
        try await follow(outcome, conversation: id)
        try await ensureChainPublished(id)
    }

    static let workspaceLostID = "AGENT_ERROR$WORKSPACE_LOST"
    static let workspaceLost =
        "The sandbox was lost, and its files with it (its node went away, or its backend no longer has it). "
        + "The conversation goes on in a new sandbox with an empty workspace: files written earlier are gone."

    /// No sandbox can be had: the agent ends in `error` with the reason.
    func sandboxFailed(_ failed: SandboxFailed) async throws {
        let id = failed.conversationID
        let masker = self.masker(for: nil)
        let reason = "The sandbox could not be started: \(failed.reason)"
        let events = try await store.postgres.transaction { connection -> [Event] in
            let ended = try ConversationStore.endInError(
                connection,
                id,
                from: AgentStateMachine.sources(of: .sandboxFailed),
                reason: reason,
                runtimeStatus: .error,
                status: .error
            )
            guard ended else { return [] }
            return try ConversationStore.append(
                connection,
                id,
                [.errorObservation(reason, errorID: failed.code), .stateChanged(.error, reason: reason)],
                step: nil,
                masker: masker
            )
        }
        try await publish(events, conversation: id)
    }
}
