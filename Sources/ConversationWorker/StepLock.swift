import DeckhandStore
import Postgres
import Synchronization

/// The conversation's session advisory lock, held by one step on its reserved connection. Released once the
/// step's end is committed (a copy of the step that comes later sees it done), before the next step is
/// published, so that the next step finds it free; or when the step fails. A broken connection took it along.
final class StepLock: Sendable {
    let connection: ReservedConnection
    let key: Int64
    private let held = Mutex(true)

    init(connection: ReservedConnection, key: Int64) {
        self.connection = connection
        self.key = key
    }

    func release() async {
        guard
            held.withLock({ held in
                defer { held = false }
                return held
            })
        else { return }
        let key = self.key
        _ = try? await connection.run { try ConversationStore.unlock($0, key) }
    }
}
