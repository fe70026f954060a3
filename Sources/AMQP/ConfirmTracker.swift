/// Publisher-confirm bookkeeping for one channel, without I/O.
///
/// Sequence numbers start at 1 on every channel (CLIBS.md pitfall 4): ``reset()`` hands back everything
/// unconfirmed, in publish order, so the connection can publish it again on a new channel.
struct ConfirmTracker<Payload> {
    enum Outcome: Equatable {
        case confirmed
        case nacked
        /// The broker returned the message as unroutable (mandatory) before confirming it.
        case returned(String)
    }

    fileprivate struct Entry {
        let sequence: UInt64
        let messageID: String?
        let payload: Payload
    }

    /// The next sequence number the broker will assign on this channel.
    private(set) var nextSequence: UInt64 = 1
    /// Unconfirmed entries in increasing sequence order.
    fileprivate var entries: [Entry] = []
    private var returned: [String: String] = [:]

    var inFlight: Int { entries.count }

    /// Records a publish; returns its sequence number.
    @discardableResult
    mutating func published(messageID: String?, payload: Payload) -> UInt64 {
        let sequence = nextSequence
        nextSequence += 1
        entries.append(Entry(sequence: sequence, messageID: messageID, payload: payload))
        return sequence
    }

    /// Records a `basic.return` for a mandatory message; its confirm follows.
    mutating func returned(messageID: String?, reason: String) {
        guard let messageID else { return }
        returned[messageID] = reason
    }

    /// Settles on `basic.ack`.
    mutating func ack(_ tag: UInt64, multiple: Bool) -> [(Payload, Outcome)] {
        let settled = settle(tag, multiple: multiple)
        return settled.map { entry in
            if let id = entry.messageID, let reason = returned.removeValue(forKey: id) {
                return (entry.payload, .returned(reason))
            }
            return (entry.payload, .confirmed)
        }
    }

    /// Settles on `basic.nack`.
    mutating func nack(_ tag: UInt64, multiple: Bool) -> [(Payload, Outcome)] {
        settle(tag, multiple: multiple).map { ($0.payload, .nacked) }
    }

    /// Forgets the channel: returns every unconfirmed payload in publish order and restarts numbering.
    mutating func reset() -> [Payload] {
        let payloads = entries.map(\.payload)
        entries.removeAll()
        returned.removeAll()
        nextSequence = 1
        return payloads
    }

    /// Removes one entry without settling it (its publisher gave up).
    mutating func forget(where predicate: (Payload) -> Bool) {
        entries.removeAll { predicate($0.payload) }
    }

    private mutating func settle(_ tag: UInt64, multiple: Bool) -> [Entry] {
        if multiple {
            let end = entries.firstIndex { $0.sequence > tag } ?? entries.endIndex
            let settled = Array(entries[..<end])
            entries.removeSubrange(..<end)
            return settled
        }
        guard let index = binarySearch(tag) else { return [] }
        return [entries.remove(at: index)]
    }

    private func binarySearch(_ sequence: UInt64) -> Int? {
        var low = 0
        var high = entries.count - 1
        while low <= high {
            let mid = (low + high) / 2
            let value = entries[mid].sequence
            if value == sequence { return mid }
            if value < sequence { low = mid + 1 } else { high = mid - 1 }
        }
        return nil
    }
}

extension ConfirmTracker {
    /// Every unconfirmed payload, in publish order.
    var payloads: [Payload] { entries.map(\.payload) }
}
