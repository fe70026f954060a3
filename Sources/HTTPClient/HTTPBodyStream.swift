import Synchronization

/// The body of a streamed response: byte chunks in order, as they arrive, with back-pressure.
///
/// At most about 1 MiB waits unread; past that the transfer pauses until the reader catches up. Cancelling the
/// reading task, or dropping every copy of the stream and its iterators before the end, aborts the transfer.
/// Iterate it once: iterators share one buffer.
public struct HTTPBodyStream: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public typealias Failure = any Error

    let buffer: BodyBuffer
    let reader: BodyReaderToken

    /// Reads the chunks.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(buffer: buffer, reader: reader)
    }

    /// Reads the chunks in order.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let buffer: BodyBuffer
        let reader: BodyReaderToken

        /// The next chunk, or `nil` at the end of the body.
        public mutating func next() async throws -> [UInt8]? {
            try await buffer.next()
        }
    }
}

/// Aborts the transfer when the last copy of a body stream (or of its iterators) goes away; it also keeps the
/// client alive until then. After the body ended, the abort finds no transfer and does nothing.
final class BodyReaderToken: Sendable {
    private let abort: @Sendable () -> Void

    init(abort: @escaping @Sendable () -> Void) {
        self.abort = abort
    }

    deinit {
        abort()
    }
}

/// The chunks between the curl thread (producer) and the reader, bounded by a high-water mark.
final class BodyBuffer: Sendable {
    static let highWaterBytes = 1 << 20
    static let lowWaterBytes = 256 << 10

    private struct State {
        var chunks: [[UInt8]] = []
        var first = 0
        var bufferedBytes = 0
        var paused = false
        var end: Result<Void, any Error>?
        var waiter: CheckedContinuation<[UInt8]?, any Error>?
    }

    private enum Offer {
        case taken
        case pause
        case handOver(CheckedContinuation<[UInt8]?, any Error>)
    }

    private enum Take {
        case chunk([UInt8], unpause: Bool)
        case end(Result<Void, any Error>)
        case wait
    }

    private let state = Mutex(State())
    private let unpause: @Sendable () -> Void
    private let abort: @Sendable () -> Void

    /// - Parameters:
    ///   - unpause: asks the curl thread to resume a paused transfer.
    ///   - abort: asks the curl thread to abort the transfer.
    init(unpause: @escaping @Sendable () -> Void, abort: @escaping @Sendable () -> Void) {
        self.unpause = unpause
        self.abort = abort
    }

    // MARK: Producer (the curl thread)

    /// Offers a chunk; returns `false` when the buffer is full and the transfer must pause (chunk not taken).
    func offer(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let offer = state.withLock { state -> Offer in
            if let waiter = state.waiter {
                state.waiter = nil
                return .handOver(waiter)
            }
            if state.bufferedBytes >= Self.highWaterBytes {
                state.paused = true
                return .pause
            }
            state.chunks.append(Array(bytes))
            state.bufferedBytes += bytes.count
            return .taken
        }
        switch offer {
        case .taken: return true
        case .pause: return false
        case .handOver(let waiter):
            waiter.resume(returning: Array(bytes))
            return true
        }
    }

    /// Ends the body, successfully (`nil`) or with an error; later calls do nothing.
    func finish(_ error: (any Error)?) {
        let waiter = state.withLock { state -> CheckedContinuation<[UInt8]?, any Error>? in
            guard state.end == nil else { return nil }
            state.end = error.map { .failure($0) } ?? .success(())
            defer { state.waiter = nil }
            return state.waiter
        }
        if let error {
            waiter?.resume(throwing: error)
        } else {
            waiter?.resume(returning: nil)
        }
    }

    // MARK: Consumer

    func next() async throws -> [UInt8]? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8]?, any Error>) in
                let take = state.withLock { state -> Take in
                    if state.first < state.chunks.count {
                        let chunk = state.chunks[state.first]
                        state.first += 1
                        state.bufferedBytes -= chunk.count
                        if state.first == state.chunks.count {
                            state.chunks.removeAll(keepingCapacity: true)
                            state.first = 0
                        }
                        let unpause = state.paused && state.bufferedBytes < Self.lowWaterBytes
                        if unpause { state.paused = false }
                        return .chunk(chunk, unpause: unpause)
                    }
                    if let end = state.end { return .end(end) }
                    if Task.isCancelled { return .end(.failure(CancellationError())) }
                    state.waiter = continuation
                    return .wait
                }
                switch take {
                case .chunk(let chunk, let unpause):
                    if unpause { self.unpause() }
                    continuation.resume(returning: chunk)
                case .end(.success):
                    continuation.resume(returning: nil)
                case .end(.failure(let error)):
                    continuation.resume(throwing: error)
                case .wait:
                    break
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<[UInt8]?, any Error>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(throwing: CancellationError())
            abort()
        }
    }
}
