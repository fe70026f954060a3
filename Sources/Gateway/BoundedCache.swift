import Synchronization

/// A map of at most `capacity` entries behind a lock, emptied when full (the caches it serves are cheap to
/// refill, and this keeps the worst case of a flood of distinct keys bounded without bookkeeping).
final class BoundedCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let entries = Mutex<[Key: Value]>([:])
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    subscript(key: Key) -> Value? { entries.withLock { $0[key] } }

    func set(_ value: Value, for key: Key) {
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[key] = value
        }
    }

    func remove(_ key: Key) { _ = entries.withLock { $0.removeValue(forKey: key) } }
}
