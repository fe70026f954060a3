import Agent
import DeckhandCore
import DeckhandStore
import Foundation
import LLM
import Logging
import Postgres
import Synchronization

/// What the model decided for a step, as stored in `llm_calls` (reused when the step is redelivered).
struct Decision: Sendable {
    var planned: [PlannedAction]
    /// The last event id the model's prompt included.
    var historyEnd: Int
    /// A fresh answer, stored with the step's first event; nil when it was stored by an earlier delivery.
    var answer: ModelAnswer?
}

/// What `llm_calls.response` holds for a step: the model's response, or the replayed action.
enum StoredAnswer: Sendable {
    case model(ChatResponse)
    case replay(Event)

    /// Reads a stored answer (`{"replay": action}`, or a Chat Completions response).
    init(text: String) throws {
        if text.hasPrefix("{\"replay\""), let replayed = try JSONValue(parsing: text)["replay"] {
            self = .replay(try Event(json: replayed))
        } else {
            self = .model(try JSONDecoder().decode(ChatResponse.self, from: Data(text.utf8)))
        }
    }

    /// The text stored.
    func text() throws -> String {
        switch self {
        case .model(let response): return String(decoding: try JSONEncoder().encode(response), as: UTF8.self)
        case .replay(let action): return JSONValue.object(["replay": action.json]).serialized
        }
    }

    /// The actions the answer plans, carrying `metrics`.
    func plan(metrics: LLMMetrics) -> [PlannedAction] {
        switch self {
        case .model(let response):
            return ResponseParser.plan(response, metrics: metrics)
        case .replay(var action):
            action.llmMetrics = metrics
            return [.action(action)]
        }
    }
}

/// How the actions of a step ended.
enum StepOutcome: Sendable, Equatable {
    /// The chain goes on with the next step.
    case proceed
    /// The agent called `finish`.
    case finished
    /// The agent replied without a tool call.
    case awaitingUser
    /// The sandbox could not be reached: the agent waits for it.
    case sandboxLost
    /// The conversation moved on (paused, stopped, deleted) while the step ran.
    case superseded
}

/// One execution of one step: everything it reads and writes goes through the step's reserved connection.
struct StepRun: Sendable {
    let worker: ConversationWorker
    let connection: ReservedConnection
    let command: StepCommand
    let logger: Logger
    let timing: StepTiming

    var id: UUID { command.conversationID }
    var number: Int { command.step }
    var agent: AgentSettings { worker.configuration.agent }

    /// What a step reads first, in one query (``ConversationStore/stepStart(_:_:step:)``).
    func load() async throws -> ConversationStore.StepStart? {
        let (id, number) = (self.id, self.number)
        return try await connection.run { try ConversationStore.stepStart($0, id, step: number) }
    }

    func run(lock: StepLock) async throws {
        let id = self.id
        guard let start = try await load() else {
            logger.debug("step of a conversation that no longer exists")
            return
        }
        let record = start.record
        if record.stepSeq > number {
            // Done before: the worker that did it may have died before publishing its events or the next step.
            let number = self.number
            let events = try await connection.run { try ConversationStore.events($0, id, step: number) }
            try await worker.publish(events, conversation: id)
            try await worker.ensureChainPublished(record)
            return
        }
        guard record.stepSeq == number, record.agentState == .running else {
            logger.debug("stale step", metadata: [LogKey.agentState.rawValue: "\(record.agentState.rawValue)"])
            return
        }
        guard let sandbox = start.sandbox, sandbox.isRunning else {
            // No running sandbox: the agent waits in `loading`; `sandbox_ready` continues the chain.
            logger.info("waiting for the sandbox")
            try await finish(.sandboxLost, historyEnd: -1, masker: worker.masker(for: record), lock: lock)
            return
        }
        let masker = worker.masker(for: record, sandbox: sandbox)

        timing.mark(.load)
        let decision: Decision
        let reused: Bool
        if let stored = start.storedResponse {
            decision = Decision(
                planned: try StoredAnswer(text: stored).plan(metrics: record.metrics),
                historyEnd: start.historyEnd ?? -1
            )
            reused = true
        } else if let fresh = try await decide(record, lastPromptTokens: start.lastPromptTokens, masker: masker) {
            decision = fresh
            reused = false
        } else {
            return  // the step ended the conversation (a limit, a model failure) or was superseded
        }
        timing.mark(.decide)
        let publisher = OrderedPublisher(worker: worker, conversation: id)
        let acted: Acted
        do {
            acted = try await act(decision, reused: reused, sandbox: sandbox, masker: masker, publisher: publisher)
        } catch {
            _ = try? await publisher.finish()
            throw error
        }
        try await publisher.finish()
        timing.mark(.act)
        if acted.outcome != .superseded {
            try await finish(
                acted.outcome,
                historyEnd: decision.historyEnd,
                observation: acted.lastObservation,
                masker: masker,
                lock: lock
            )
            timing.mark(.finish)
        }
        // The step's time ends once its end is committed and its events published.
        timing.record()
    }

    // MARK: The model's decision

    /// Checks the limits, condenses the history when it is too long, asks the model (or the replayed
    /// trajectory) and stores the answer before any action runs. Nil when the step ended the conversation.
    func decide(_ record: ConversationRecord, lastPromptTokens: Int?, masker: SecretMasker) async throws -> Decision? {
        let id = self.id
        // The operator's caps hold whatever the row says (a row written before a cap was lowered included).
        let limits = UserLimits(agent: worker.configuration.agent, llm: worker.configuration.llm)
        let maxIterations = min(record.maxIterations, limits.maxIterations)
        if record.iteration >= maxIterations {
            try await endWithError("The agent reached its limit of \(maxIterations) iterations.", masker: masker)
            return nil
        }
        let pricedModel = record.llmModel ?? worker.configuration.llm.model
        let budget = limits.budget(conversation: record.maxBudget)
        if budget != nil, !record.hasReplay, limits.price(of: pricedModel) == nil {
            try await endWithError(UserLimits.unpriced(pricedModel) + ".", masker: masker)
            return nil
        }
        if let budget, record.metrics.accumulatedCost >= budget {
            let spent = String(format: "%.4f", record.metrics.accumulatedCost)
            try await endWithError(
                "The agent reached its budget of \(budget) USD (spent \(spent) USD).",
                masker: masker
            )
            return nil
        }
        var events = try await history(of: record)
        if let reason = StuckDetector.reason(events) {
            try await endWithError("The agent is stuck: \(reason).", masker: masker)
            return nil
        }
        let conversationKey: String?
        do {
            conversationKey = try worker.modelKey(of: record)
        } catch let error as DeckhandError {
            try await endWithError("The model could not be used: \(error.message)", masker: masker)
            return nil
        }
        let endpoint = LLMEndpoint(
            baseURL: record.llmBaseURL ?? worker.configuration.llm.baseURL,
            apiKey: conversationKey ?? worker.configuration.llm.apiKey,
            model: record.llmModel ?? worker.configuration.llm.model
        )
        if !record.hasReplay, endpoint.isUnconfigured {
            // Without these the first call would go to api.openai.com with no key, and be retried for minutes.
            try await endWithError(
                "No model is configured: set llm.base_url, llm.api_key and llm.model (DECKHAND_LLM_BASE_URL, "
                    + "DECKHAND_LLM_API_KEY, DECKHAND_LLM_MODEL), or create the conversation with replay_json.",
                runtimeStatus: .errorLLMAuthentication,
                masker: masker
            )
            return nil
        }
        let history = HistoryBuilder(observationMaxChars: agent.observationMaxChars)
        var messages = history.messages(from: events)
        if !record.hasReplay,
            let condensation = try await condenseIfNeeded(
                record: record,
                events: events,
                messages: messages,
                reportedTokens: lastPromptTokens,
                endpoint: endpoint,
                masker: masker
            )
        {
            events.append(StoredEvent(event: condensation, step: self.number))
            messages = history.messages(from: events)
        }
        let historyEnd = events.last?.id ?? -1

        let answer: StoredAnswer
        var usage = TokenUsage()
        var cost = 0.0
        var attempts = 1
        let started = ContinuousClock.now
        if record.hasReplay {
            let position = record.replayPosition
            let next = try await connection.run { try ConversationStore.replayAction($0, id, at: position) }
            if let next, let action = try? Event(json: JSONValue(parsing: next)) {
                answer = .replay(action)
            } else {
                answer = .replay(.agentMessage("The replayed trajectory has ended.", waitForResponse: true))
            }
        } else {
            let request = ChatRequest(
                model: endpoint.model,
                messages: messages,
                tools: CodeActTools.all,
                temperature: worker.configuration.llm.temperature
            )
            do {
                let completion = try await worker.llm.complete(
                    request,
                    endpoint: endpoint,
                    idempotencyKey: modelCallKey(record, "answer")
                )
                answer = .model(completion.response)
                usage = completion.response.usage
                StepMetrics.modelAnswered(promptTokens: usage.promptTokens, completionTokens: usage.completionTokens)
                attempts = completion.attempts
                cost =
                    limits.price(of: endpoint.model).map {
                        PriceTable.cost($0, promptTokens: usage.promptTokens, completionTokens: usage.completionTokens)
                    } ?? 0
            } catch let failure as LLMFailure {
                StepMetrics.modelFailed()
                logger.warning("the model failed", metadata: [LogKey.error.rawValue: "\(failure)"])
                try await endWithError(
                    "The model could not be used: \(failure.description)",
                    runtimeStatus: failure.runtimeStatus,
                    masker: masker
                )
                return nil
            }
        }
        let elapsed = ContinuousClock.now - started
        timing.addModel(elapsed)
        let stored = ModelAnswer(
            step: number,
            response: try answer.text(),
            historyEnd: historyEnd,
            model: record.hasReplay ? "replay" : endpoint.model,
            promptTokens: usage.promptTokens,
            completionTokens: usage.completionTokens,
            cachedTokens: usage.cachedTokens,
            cost: cost,
            attempts: attempts,
            duration: elapsed,
            replayed: record.hasReplay
        )
        return Decision(
            planned: answer.plan(metrics: stored.adding(to: record.metrics)),
            historyEnd: historyEnd,
            answer: stored
        )
    }

    /// Every event of the conversation, in order: those this worker kept from earlier steps
    /// (``EventCache``) and those committed since, read now.
    func history(of record: ConversationRecord) async throws -> [StoredEvent] {
        let key = EventCache.Key(conversation: self.id, created: record.createdAt)
        let kept = worker.eventCache.events(of: key)
        let (id, after) = (self.id, kept.last?.id ?? -1)
        let newer = try await connection.run { try ConversationStore.eventsAndSize($0, id, after: after) }
        let events = kept + newer.events
        worker.eventCache.keep(events, bytes: newer.bytes, for: key)
        return events
    }

    /// The `Idempotency-Key` of this step's model call for `purpose`: the same for every delivery of the
    /// step, different for a conversation made again under the same id.
    func modelCallKey(_ record: ConversationRecord, _ purpose: String) -> String {
        let created = Int64((record.createdAt.timeIntervalSince1970 * 1000).rounded())
        return "deckhand-\(id.uuidString.lowercased())-\(created)-step-\(number)-\(purpose)"
    }

    /// Replaces the middle of a history grown past `agent.condense_after_tokens` by the model's summary
    /// (a `condensation` event). Returns the stored `condensation` event, if it did. Once per step: a
    /// redelivered step whose first delivery condensed finds that condensation in its history and keeps it.
    func condenseIfNeeded(
        record: ConversationRecord,
        events: [StoredEvent],
        messages: [ChatMessage],
        reportedTokens reported: Int?,
        endpoint: LLMEndpoint,
        masker: SecretMasker
    ) async throws -> Event? {
        guard agent.condenseAfterTokens > 0 else { return nil }
        let number = self.number
        guard !events.contains(where: { $0.step == number && $0.event.action == "condensation" }) else {
            return nil
        }
        let id = self.id
        let estimated =
            messages.reduce(0) { $0 + ($1.content?.count ?? 0) + $1.toolCalls.reduce(0) { $0 + $1.arguments.count } }
            / 4
        guard max(reported ?? 0, estimated) > agent.condenseAfterTokens else { return nil }
        let condenser = Condenser(keepFirst: agent.condenseKeepFirst, keepRecent: agent.condenseKeepRecent)
        guard let plan = condenser.plan(events) else { return nil }
        let request = ChatRequest(
            model: endpoint.model,
            messages: condenser.summaryMessages(for: plan, observationMaxChars: agent.observationMaxChars)
        )
        let summary: String
        do {
            summary =
                try await worker.llm.complete(
                    request,
                    endpoint: endpoint,
                    idempotencyKey: modelCallKey(record, "condensation")
                ).response.content ?? ""
        } catch let failure as LLMFailure {
            logger.warning("cannot condense the history", metadata: [LogKey.error.rawValue: "\(failure)"])
            return nil
        }
        guard let stored = try await appendIfCurrent([Condenser.event(plan, summary: summary)], masker: masker) else {
            return nil
        }
        try await worker.publish(stored, conversation: id)
        logger.info("condensed the history", metadata: [LogKey.forgotten.rawValue: "\(plan.startID)-\(plan.endID)"])
        return stored.first
    }

    // MARK: Actions

    /// How a step's actions ended, and the last one's observation, not yet stored: it is committed with the
    /// step's end.
    struct Acted: Sendable {
        var outcome: StepOutcome
        var lastObservation: Event?
    }

    /// Records and runs the decision's actions in order, skipping what an earlier delivery did: an action
    /// with an observation is not sent again; one without is sent again under its id, and the sandbox answers
    /// with the observation of the run it already had (exactly once, unless the sandbox itself was lost).
    /// A fresh answer is stored with the first event; the last observation is left to ``finish``.
    func act(
        _ decision: Decision,
        reused: Bool,
        sandbox: SandboxEndpoint,
        masker: SecretMasker,
        publisher: OrderedPublisher
    ) async throws -> Acted {
        var acted = try await actions(
            decision,
            reused: reused,
            sandbox: sandbox,
            masker: masker,
            publisher: publisher
        )
        if let answer = decision.answer, !acted.answerStored {
            // No event was appended (an empty plan): the answer is stored on its own.
            let id = self.id
            _ = try await connection.run { try ConversationStore.storeAnswer($0, id, answer) }
            acted.answerStored = true
        }
        return Acted(outcome: acted.outcome, lastObservation: acted.lastObservation)
    }

    private struct Progress {
        var outcome = StepOutcome.proceed
        var lastObservation: Event?
        var answerStored = false
    }

    private func actions(
        _ decision: Decision,
        reused: Bool,
        sandbox: SandboxEndpoint,
        masker: SecretMasker,
        publisher: OrderedPublisher
    ) async throws -> Progress {
        let (id, number) = (self.id, self.number)
        var progress = Progress()
        /// Appends `events` if the step is current, with the answer the first time.
        func record(_ events: [Event]) async throws -> [Event]? {
            let answer = progress.answerStored ? nil : decision.answer
            progress.answerStored = true
            return try await appendIfCurrent(events, masker: masker, answer: answer)
        }
        // Only a reused decision can have actions recorded by an earlier delivery.
        let existing = reused ? try await connection.run { try ConversationStore.events($0, id, step: number) } : []
        let recorded = existing.filter { event in
            (event.source == .agent && event.action != nil && event.action != "condensation")
                || event.extras["error_id"]?.stringValue == ResponseParser.badActionErrorID
        }
        let observed = Set(existing.compactMap(\.cause))
        for (index, item) in decision.planned.enumerated() {
            let prior = index < recorded.count ? recorded[index] : nil
            let action: Event
            switch item {
            case .invalid(let error):
                if prior == nil {
                    guard let stored = try await record([error]) else {
                        progress.outcome = .superseded
                        return progress
                    }
                    publisher.publish(stored)
                }
                continue
            case .action(let planned):
                if let prior {
                    action = prior
                } else {
                    guard let stored = try await record([planned]) else {
                        progress.outcome = .superseded
                        return progress
                    }
                    publisher.publish(stored)
                    action = stored[0]
                }
            }
            switch action.action {
            case "finish": progress.outcome = .finished
            case "message" where action.args["wait_for_response"]?.boolValue == true:
                progress.outcome = .awaitingUser
            default: break
            }
            if let prior, let priorID = prior.id, observed.contains(priorID) { continue }
            var observation: Event?
            var lost = false
            if ResponseParser.needsSandbox(action) {
                // An action recorded by an earlier delivery is sent again under its id: the sandbox answers
                // with the observation of the run it had (or waits for it), and runs it only if it never got it.
                let sent = ContinuousClock.now
                defer { timing.addSandbox(ContinuousClock.now - sent) }
                do {
                    observation = try await worker.sandboxes.execute(
                        action,
                        of: id,
                        in: sandbox,
                        defaultTimeout: agent.actionTimeout
                    )
                } catch let unreachable as SandboxClient.Unreachable {
                    logger.warning("the sandbox is unreachable", metadata: [LogKey.error.rawValue: "\(unreachable)"])
                    observation = .errorObservation(
                        "The sandbox could not be reached (\(unreachable.description)); it is being restarted. "
                            + "Run the action again once it is back.",
                        errorID: "AGENT_ERROR$SANDBOX_UNREACHABLE",
                        cause: action.id,
                        toolCallMetadata: action.toolCallMetadata
                    )
                    lost = true
                }
            } else {
                observation = ResponseParser.localObservation(for: action)
            }
            if lost || index == decision.planned.count - 1 {
                // The step's last observation: committed with the step's end.
                progress.lastObservation = observation
                if lost { progress.outcome = .sandboxLost }
                return progress
            }
            if let observation {
                guard let stored = try await appendAlways([observation], masker: masker) else {
                    progress.outcome = .superseded
                    return progress
                }
                publisher.publish(stored)
            }
        }
        return progress
    }

    // MARK: Ending the step

    /// Commits the end of the step with its last observation, then publishes its events and the next step:
    /// the chain goes on, or the agent waits (for the user, or in `loading` for its sandbox, which is asked
    /// for). A user message that arrived after the model's prompt was built keeps the chain going. The
    /// observation is stored whatever the agent's state (an action that ran keeps its result).
    func finish(
        _ outcome: StepOutcome,
        historyEnd: Int,
        observation: Event? = nil,
        masker: SecretMasker,
        lock: StepLock
    ) async throws {
        let (id, number) = (self.id, self.number)
        let ended = try await connection.run { connection in
            try connection.transaction { connection -> (result: CommandOutcome, moved: Bool)? in
                guard let record = try ConversationStore.conversation(connection, id, lock: true) else { return nil }
                var result = CommandOutcome()
                if let observation {
                    result.events = try ConversationStore.append(
                        connection,
                        id,
                        [observation],
                        step: number,
                        masker: masker
                    )
                }
                guard record.stepSeq == number, record.agentState == .running else { return (result, false) }
                let end: AgentStateMachine.StepEnd
                switch outcome {
                case .proceed, .superseded:
                    end = .proceed
                case .finished, .awaitingUser:
                    let newer = try ConversationStore.userMessage(connection, id, after: historyEnd)
                    end = newer ? .userMessagePending : (outcome == .finished ? .finished : .awaitingUser)
                case .sandboxLost:
                    end = .sandboxLost
                }
                // The agent is running (checked above): every step end moves it.
                guard let transition = AgentStateMachine.apply(.stepEnded(end), in: record.agentState) else {
                    return (result, false)
                }
                if !transition.effects.contains(.nextStep) {
                    let state = transition.to
                    try ConversationStore.endChain(
                        connection,
                        id,
                        after: number,
                        in: state,
                        resumeOnReady: transition.effects.contains(.resumeOnReady)
                    )
                    result.events += try ConversationStore.append(
                        connection,
                        id,
                        [.stateChanged(state)],
                        step: number,
                        masker: masker
                    )
                    result.wantsSandbox = transition.effects.contains(.requestSandbox)
                } else {
                    try ConversationStore.advanceStep(connection, id, after: number)
                    result.startedStep = number + 1
                }
                return (result, true)
            }
        }
        guard let ended else { return }
        guard ended.moved else {
            try await worker.publish(ended.result.events, conversation: id)
            return
        }
        await lock.release()
        try await worker.follow(ended.result, conversation: id)
    }

    /// Ends the chain in `error` with `reason` (an `error` observation and the state change).
    func endWithError(_ reason: String, runtimeStatus: RuntimeStatus? = nil, masker: SecretMasker) async throws {
        let (id, number) = (self.id, self.number)
        let stored = try await connection.run { connection in
            try connection.transaction { connection in
                try ConversationStore.failChain(
                    connection,
                    id,
                    step: number,
                    reason: reason,
                    errorID: "AGENT_ERROR$ENDED",
                    runtimeStatus: runtimeStatus,
                    masker: masker
                )
            }
        }
        logger.notice("the agent ended in error", metadata: [LogKey.error.rawValue: "\(reason)"])
        try await worker.publish(stored, conversation: id)
    }

    // MARK: Appending

    /// Appends `events` as this step's if the chain is still at this step and running; nil otherwise. With
    /// `answer`, in one transaction with the model's answer, which is stored either way (its cost was spent).
    func appendIfCurrent(_ events: [Event], masker: SecretMasker, answer: ModelAnswer? = nil) async throws -> [Event]? {
        let (id, number) = (self.id, self.number)
        return try await connection.run { connection in
            let append = { (connection: PostgresConnection) in
                try ConversationStore.append(connection, id, events, step: number, masker: masker, onlyAt: number)
            }
            // One statement needs no transaction of its own; with the answer, both commit together.
            guard let answer else { return try append(connection) }
            return try connection.transaction { connection in
                try ConversationStore.storeAnswer(connection, id, answer)
                return try append(connection)
            }
        }
    }

    /// Appends `events` as this step's whatever the agent's state (an action that ran keeps its result);
    /// nil when the conversation was deleted.
    func appendAlways(_ events: [Event], masker: SecretMasker) async throws -> [Event]? {
        let (id, number) = (self.id, self.number)
        return try await connection.run { connection in
            try ConversationStore.append(connection, id, events, step: number, masker: masker, onlyAt: nil)
        }
    }
}
