/// Turns a consumer's individual settlements into as few frames as possible, without I/O.
///
/// Acks for a contiguous run of the oldest outstanding deliveries become one `basic.ack` with
/// `multiple=true`; other acks go one by one; nacks and rejects are sent first, one by one, so a later
/// multiple ack never covers them while they are still outstanding at the broker.
struct AckCoalescer {
    enum Frame: Equatable {
        case ack(tag: UInt64, multiple: Bool)
        case nack(tag: UInt64, requeue: Bool)
        case reject(tag: UInt64, requeue: Bool)
    }

    /// Delivered and unsettled tags, increasing.
    private var outstanding: [UInt64] = []
    private var acked: Set<UInt64> = []
    private var negative: [Frame] = []

    var outstandingCount: Int { outstanding.count }

    mutating func delivered(_ tag: UInt64) {
        outstanding.append(tag)
    }

    mutating func settle(_ tag: UInt64, _ kind: SettlementKind) {
        switch kind {
        case .ack:
            acked.insert(tag)
        case .nack(let requeue):
            if remove(tag) { negative.append(.nack(tag: tag, requeue: requeue)) }
        case .reject(let requeue):
            if remove(tag) { negative.append(.reject(tag: tag, requeue: requeue)) }
        }
    }

    /// The frames to send now, in order.
    mutating func flush() -> [Frame] {
        var frames = negative
        negative.removeAll()
        guard !acked.isEmpty else { return frames }
        var prefix = 0
        while prefix < outstanding.count, acked.contains(outstanding[prefix]) {
            acked.remove(outstanding[prefix])
            prefix += 1
        }
        if prefix > 0 {
            frames.append(.ack(tag: outstanding[prefix - 1], multiple: prefix > 1))
            outstanding.removeSubrange(..<prefix)
        }
        if !acked.isEmpty {
            for tag in acked.sorted() where remove(tag) {
                frames.append(.ack(tag: tag, multiple: false))
            }
            acked.removeAll()
        }
        return frames
    }

    /// Forgets everything (the channel is gone; the broker requeues what was outstanding).
    mutating func reset() {
        outstanding.removeAll()
        acked.removeAll()
        negative.removeAll()
    }

    private mutating func remove(_ tag: UInt64) -> Bool {
        guard let index = outstanding.firstIndex(of: tag) else { return false }
        outstanding.remove(at: index)
        return true
    }
}
