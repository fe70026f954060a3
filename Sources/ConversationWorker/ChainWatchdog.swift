import AMQP
import DeckhandCore
import DeckhandStore
import Foundation
import Logging
import Messaging
import Postgres

/// A chain always resumes: every conversation worker looks, every quarter of `agent.step_watchdog`, for
/// running conversations quiet for longer than that whose step lock nobody holds — their step died (its
/// retries ran out during an outage, its message was dead-lettered, or its publish was lost) — and publishes
/// the step again. The claim is a conditional update under the step lock, so one worker restarts a chain
/// once per quiet period; a second copy of a step is harmless (the step protocol skips a step already done).
/// After `agent.step_restarts` restarts of the same step, the chain ends in `error` with the reason as an
/// event, and the user's next message starts it again.
///
/// Conversations waiting in `loading` for their sandbox are looked after the same way: one quiet for that
/// long (its `provision` died, or its answer did) gets its sandbox asked for again — a repeated provision
/// hands out the sandbox the conversation has, never a second one — and after `agent.step_restarts` such
/// requests it ends in `error`, saying so.
struct ChainWatchdog: Sendable {
    let worker: ConversationWorker

    var quietFor: Duration { worker.agent.stepWatchdog }

    /// What one look did with one chain.
    enum Outcome: Equatable {
        case restarted(step: Int)
        case ended(step: Int)
        /// A conversation in `loading`: its sandbox was asked for again.
        case sandboxRequested
        /// A conversation in `loading` that no request brought a sandbox: it ended in `error`.
        case sandboxAbandoned
    }

    /// Looks every quarter of `agent.step_watchdog` until cancelled. A failed look (PostgreSQL or RabbitMQ
    /// away: the very outage that kills steps) is logged and tried again at the next.
    func run() async {
        let interval = max(quietFor / 4, .milliseconds(50))
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
                _ = try await sweep()
            } catch is CancellationError {
                return
            } catch {
                worker.logger.warning("chain watchdog: look failed", metadata: [LogKey.error.rawValue: "\(error)"])
            }
        }
    }

    /// One look: restarts (or ends) every quiet chain it can claim. Not while commands wait in
    /// `conversation.commands`: behind a backlog a quiet chain's step may only be waiting its turn, and
    /// restarting it would count against it a delay that is not its fault.
    func sweep(limit: Int = 100) async throws -> [UUID: Outcome] {
        var outcomes: [UUID: Outcome] = [:]
        let quiet = try await worker.store.quietChains(quietFor: quietFor, limit: limit)
        let loading = try await worker.store.quietChains(in: .loading, quietFor: quietFor, limit: limit)
        guard !quiet.isEmpty || !loading.isEmpty else { return outcomes }
        let waiting = try await worker.bus.consuming.inspect(queue: worker.topology.conversationQueue).messageCount
        guard waiting == 0 else {
            worker.logger.info(
                "chain watchdog: quiet chains left alone while commands wait",
                metadata: [LogKey.quietChains.rawValue: "\(quiet.count + loading.count)"]
            )
            return outcomes
        }
        for id in loading {
            guard
                case .restart(_, let requests) = try await worker.store.claimRestart(
                    id,
                    in: .loading,
                    quietFor: quietFor
                )
            else { continue }
            var logger = worker.logger
            logger[metadataKey: LogKey.conversationID.rawValue] = "\(id)"
            if requests > worker.agent.stepRestarts {
                let waited = quietFor * requests
                try await worker.sandboxFailed(
                    SandboxFailed(
                        conversationID: id,
                        sandboxID: nil,
                        code: DeckhandError.Code.timeout.rawValue,
                        reason: "it was not ready after \(waited) and \(requests) requests (a runtime worker or its "
                            + "backend may be unavailable). Send a message to try again."
                    )
                )
                logger.error("chain watchdog: no sandbox came; the agent ended in error")
                outcomes[id] = .sandboxAbandoned
            } else {
                try await worker.requestSandbox(id)
                logger.notice(
                    "chain watchdog: a conversation waited for its sandbox with no answer; it was asked for again",
                    metadata: [LogKey.restarts.rawValue: "\(requests)"]
                )
                outcomes[id] = .sandboxRequested
            }
        }
        for id in quiet {
            guard case .restart(let step, let restarts) = try await worker.store.claimRestart(id, quietFor: quietFor)
            else { continue }
            var logger = worker.logger
            logger[metadataKey: LogKey.conversationID.rawValue] = "\(id)"
            logger[metadataKey: LogKey.step.rawValue] = "\(step)"
            if restarts > worker.agent.stepRestarts {
                try await end(id, step: step, restarts: restarts - 1)
                logger.error("chain watchdog: the step kept dying; the agent ended in error")
                outcomes[id] = .ended(step: step)
            } else {
                try await worker.publishStep(step, conversation: id)
                logger.notice(
                    "chain watchdog: a running conversation had no step in flight; its step was published again",
                    metadata: [LogKey.restarts.rawValue: "\(restarts)"]
                )
                outcomes[id] = .restarted(step: step)
            }
        }
        for outcome in outcomes.values { StepMetrics.watchdog(outcome) }
        return outcomes
    }

    /// Ends the chain at `step` in `error`, saying why, and publishes the events.
    private func end(_ id: UUID, step: Int, restarts: Int) async throws {
        let reason =
            "The agent's step \(step) did not complete, \(restarts) restarts included (a service it needs may "
            + "be unavailable). Send a message to try again."
        let record = try await worker.store.conversation(id)
        let masker = worker.masker(for: record)
        let stored = try await worker.store.postgres.transaction { connection in
            try ConversationStore.failChain(
                connection,
                id,
                step: step,
                reason: reason,
                errorID: "AGENT_ERROR$STEP_LOST",
                masker: masker
            )
        }
        try await worker.publish(stored, conversation: id)
    }
}
