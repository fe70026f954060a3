import DeckhandCore
import Foundation
import Synchronization

/// The events of the conversations this worker stepped lately, so that a step reads from PostgreSQL only the
/// events committed since the last one it kept instead of the whole conversation (O(n) per step, O(n²) per
/// conversation).
///
/// Sound because events are append-only and their ids are given under the conversation's row lock
/// (``ConversationStore/append(_:_:_:step:masker:onlyAt:)``): a snapshot that holds event n holds every event
/// below it. An entry is tied to the conversation's creation time, so a conversation deleted and created again
/// with the same id (`conversation_id`) never sees the old one's events. Least recently used entries go first
/// once the stored JSON they were parsed from passes `capacity` bytes.
final class EventCache: Sendable {
    struct Key: Hashable, Sendable {
        var conversation: UUID
        var created: Date
    }

    private struct Entry {
        var events: [StoredEvent]
        var bytes: Int
        var used: UInt64
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var bytes = 0
        var clock: UInt64 = 0
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int = 16 << 20) {
        self.capacity = capacity
    }

    /// The events kept for `key`, in order; empty when none are.
    func events(of key: Key) -> [StoredEvent] {
        state.withLock { state in
            guard var entry = state.entries[key] else { return [] }
            state.clock += 1
            entry.used = state.clock
            state.entries[key] = entry
            return entry.events
        }
    }

    /// Keeps `events` (all of the conversation's, in order) for `key`, `newBytes` of stored JSON more than what
    /// was kept; evicts the least recently used entries past the capacity (and does not keep one that alone
    /// exceeds it).
    func keep(_ events: [StoredEvent], bytes newBytes: Int, for key: Key) {
        state.withLock { state in
            let bytes = (state.entries[key]?.bytes ?? 0) + newBytes
            if let old = state.entries.removeValue(forKey: key) { state.bytes -= old.bytes }
            guard bytes <= capacity else { return }
            while state.bytes + bytes > capacity,
                let oldest = state.entries.min(by: { $0.value.used < $1.value.used })
            {
                state.entries[oldest.key] = nil
                state.bytes -= oldest.value.bytes
            }
            state.clock += 1
            state.entries[key] = Entry(events: events, bytes: bytes, used: state.clock)
            state.bytes += bytes
        }
    }

    /// The stored JSON kept, in bytes, and the number of conversations.
    var size: (bytes: Int, conversations: Int) { state.withLock { ($0.bytes, $0.entries.count) } }
}
