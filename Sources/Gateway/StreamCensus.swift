import DeckhandCore
import DeckhandStore
import Foundation
import Logging

/// Writes this gateway's live-stream clients per conversation to `stream_connections`, so that
/// `num_connections` on any gateway counts every gateway's clients: what changed, every `interval`;
/// everything (a fresh `seen_at`), every `refresh`; nothing left once it stops. The streams themselves never
/// wait for it: it reads the hub's counts in the background.
struct StreamCensus: Sendable {
    let store: StreamCensusStore
    let gateway: String
    let hub: EventHub
    let logger: Logger
    var interval: Duration = .seconds(1)
    var refresh: Duration = .seconds(10)

    /// Runs until cancelled, then deletes this gateway's rows (within 2 s; a dead gateway's rows are ignored
    /// after ``StreamCensusStore/staleAfter`` seconds anyway).
    func run() async {
        var written: [UUID: Int] = [:]
        var refreshed = ContinuousClock.now
        while (try? await Task.sleep(for: interval)) != nil {
            let counts = hub.counts()
            let changed = counts.filter { written[$0.key] != $0.value }
            let gone = written.keys.filter { counts[$0] == nil }
            do {
                try await store.write(gateway: gateway, counts: changed, gone: gone)
                written = counts
                if ContinuousClock.now - refreshed >= refresh {
                    try await store.refresh(gateway: gateway)
                    refreshed = .now
                }
            } catch {
                // The next tick writes what is still different.
                logger.warning("cannot write the stream census", metadata: [LogKey.error.rawValue: "\(error)"])
            }
        }
        // Cancelled: the deletion runs in a task of its own, which the cancellation does not reach, for at most
        // 2 s.
        let (store, gateway) = (store, gateway)
        let removal = Task { try await store.remove(gateway: gateway) }
        let deadline = Task {
            try await Task.sleep(for: .seconds(2))
            removal.cancel()
        }
        _ = try? await removal.value
        deadline.cancel()
    }
}
