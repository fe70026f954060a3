import DeckhandCore
import Synchronization

/// The observation of each action the server ran, by the id its caller gave it (``ActionJournal/header``):
/// a request that repeats an id — its caller's worker died, or lost its database, before recording the
/// answer — gets the observation of the run it already had, or waits for that run if it is still going,
/// instead of running the action twice. The run belongs to the journal, not to the request: a caller that
/// hangs up does not stop it, and its observation is kept for whoever asks next.
///
/// Kept in memory (so across a pause, which freezes the server, but not across a restart of the server);
/// bounded to the last ``capacity`` ids. A request without an id runs as before.
final class ActionJournal: Sendable {
    /// The request header that names an action (`<conversation>/<event id>` from Deckhand's workers).
    static let header = "X-Deckhand-Action-ID"
    /// The longest id accepted.
    static let maximumIDLength = 200

    let capacity: Int
    private let state = Mutex(State())

    private struct State {
        var runs: [String: Task<ActionExecutor.Answer, Never>] = [:]
        /// Ids oldest first: the first goes when the journal is full.
        var order: [String] = []
    }

    init(capacity: Int = 128) {
        self.capacity = max(1, capacity)
    }

    /// The answer for action `id`: the one recorded, the one being produced, or a new run of `body`.
    func answer(
        id: String?,
        run body: @escaping @Sendable () async -> ActionExecutor.Answer
    ) async -> ActionExecutor.Answer {
        guard let id else { return await body() }
        let run = state.withLock { state in
            if let known = state.runs[id] { return known }
            let run = Task { await body() }
            state.runs[id] = run
            state.order.append(id)
            if state.order.count > capacity {
                state.runs[state.order.removeFirst()] = nil
            }
            return run
        }
        return await run.value
    }

    /// How many ids are remembered.
    var count: Int { state.withLock { $0.runs.count } }
}
