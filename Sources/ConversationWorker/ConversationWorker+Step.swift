import Agent
import DeckhandCore
import DeckhandStore
import Foundation
import LLM
import Logging
import Postgres
import Synchronization

/// Another copy of the step still holds the conversation after `agent.step_lock_wait`: retried later.
struct StepBusy: Error, CustomStringConvertible {
    var description: String { "another copy of this step still holds the conversation" }
}

extension ConversationWorker {
    /// Handles step `command.step` of a conversation (DESIGN §4) while holding the conversation's session
    /// advisory lock on a reserved connection, so that two copies of a step never run at once, and a worker
    /// that dies releases the lock with its connection.
    func step(_ command: StepCommand, logger: Logger) async throws {
        var logger = logger
        logger[metadataKey: LogKey.conversationID.rawValue] = "\(command.conversationID)"
        logger[metadataKey: LogKey.step.rawValue] = "\(command.step)"
        let key = store.stepLockKey(command.conversationID)
        let wait = agent.stepLockWait
        let timing = StepTiming()
        try await store.postgres.withReservedConnection { connection in
            // The next step usually arrives while this worker (or another) still releases the lock: poll
            // quickly at first.
            let deadline = ContinuousClock.now + wait
            var pause = Duration.milliseconds(2)
            while try await !connection.run({ try ConversationStore.tryLock($0, key) }) {
                guard ContinuousClock.now < deadline else { throw StepBusy() }
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .milliseconds(50))
            }
            timing.mark(.lock)
            let lock = StepLock(connection: connection, key: key)
            let result: Result<Void, any Error>
            do {
                try await StepRun(
                    worker: self,
                    connection: connection,
                    command: command,
                    logger: logger,
                    timing: timing
                )
                .run(lock: lock)
                result = .success(())
            } catch {
                result = .failure(error)
            }
            await lock.release()
            try result.get()
        }
    }
}
