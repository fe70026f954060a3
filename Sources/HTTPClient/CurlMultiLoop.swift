import CCurl
import DeckhandCore
import Foundation
import Logging
import Synchronization

/// `curl_global_init`, run once per process before the first curl thread starts (Swift globals initialise
/// exactly once, thread-safely).
private let curlGlobalInitResult: CURLcode = curl_global_init(Int(CURL_GLOBAL_ALL))

/// The multi handle as seen from outside the curl thread.
///
/// Only `curl_multi_wakeup` — the one thread-safe multi call — is made from other threads, and only while
/// holding ``CurlMultiLoop``'s lock, under which the curl thread also marks the loop stopped before it frees
/// the handle. Every other use happens on the curl thread.
private struct SharedMultiHandle: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
}

/// One OS thread that drives every transfer of an ``HTTPClient`` through one `curl_multi` handle.
///
/// The thread sleeps in `curl_multi_poll`; submitters append commands to a locked inbox and wake it with
/// `curl_multi_wakeup`. Blocking never happens on Swift's cooperative pool.
final class CurlMultiLoop: Sendable {
    enum Command: Sendable {
        case start(UInt64, HTTPRequest, ResponseSink)
        case cancel(UInt64)
        case unpause(UInt64)
    }

    enum SubmitResult {
        case queued
        case cancelled
        case shutDown
    }

    private enum RunState: Equatable {
        case running
        case shuttingDown
        case stopped
    }

    private struct Shared {
        var inbox: [Command] = []
        var state: RunState = .running
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let shared = Mutex(Shared())
    private let multi: SharedMultiHandle
    private let nextTransferID = Atomic<UInt64>(1)
    private let logger: Logger

    init(configuration: HTTPClient.Configuration, logger: Logger) throws {
        guard curlGlobalInitResult == CURLE_OK else {
            throw DeckhandError(.internalError, "curl_global_init failed: \(curlGlobalInitResult.rawValue)")
        }
        guard let raw = curl_multi_init() else {
            throw DeckhandError(.internalError, "curl_multi_init failed")
        }
        if let limit = configuration.maxConnectionsPerHost {
            _ = deckhand_multi_setopt_long(raw, CURLMOPT_MAX_HOST_CONNECTIONS, limit)
        }
        if let limit = configuration.maxIdleConnections {
            _ = deckhand_multi_setopt_long(raw, CURLMOPT_MAXCONNECTS, limit)
        }
        self.multi = SharedMultiHandle(raw: raw)
        self.logger = logger
        let thread = Thread { [self] in self.run() }
        thread.name = "deckhand-curl"
        thread.start()
    }

    /// A fresh transfer identifier.
    func makeTransferID() -> UInt64 {
        nextTransferID.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    /// Queues a transfer, unless the calling task is already cancelled or the loop is shutting down.
    ///
    /// The cancellation check and the append happen under one lock, so a cancellation handler that runs
    /// after the check always queues its `cancel` behind this `start`.
    func start(_ id: UInt64, _ request: HTTPRequest, _ sink: ResponseSink) -> SubmitResult {
        shared.withLock { shared in
            guard shared.state == .running else { return .shutDown }
            if Task.isCancelled { return .cancelled }
            shared.inbox.append(.start(id, request, sink))
            if shared.inbox.count == 1 { curl_multi_wakeup(multi.raw) }
            return .queued
        }
    }

    /// Aborts a transfer if it is still running; does nothing otherwise.
    func cancel(_ id: UInt64) { enqueue(.cancel(id)) }

    /// Resumes a transfer that paused because its reader was behind.
    func unpause(_ id: UInt64) { enqueue(.unpause(id)) }

    /// Appends to the inbox (unless the thread has stopped) and wakes the thread when the inbox was empty.
    private func enqueue(_ command: Command) {
        shared.withLock { shared in
            guard shared.state != .stopped else { return }
            shared.inbox.append(command)
            if shared.inbox.count == 1 { curl_multi_wakeup(multi.raw) }
        }
    }

    /// Asks the thread to fail every transfer and stop, without waiting.
    func requestShutdown() {
        shared.withLock { shared in
            guard shared.state == .running else { return }
            shared.state = .shuttingDown
            curl_multi_wakeup(multi.raw)
        }
    }

    /// Asks the thread to fail every transfer and stop, and waits until it has.
    func shutdown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let stopped = shared.withLock { shared in
                guard shared.state != .stopped else { return true }
                shared.state = .shuttingDown
                shared.stopWaiters.append(continuation)
                curl_multi_wakeup(multi.raw)
                return false
            }
            if stopped { continuation.resume() }
        }
    }

    // MARK: The curl thread

    private func run() {
        let multi = self.multi.raw
        var transfers: [UInt64: Transfer] = [:]
        var byHandle: [UnsafeMutableRawPointer: Transfer] = [:]
        var spareHandles: [UnsafeMutableRawPointer] = []
        var runningCount: Int32 = 0

        func finish(_ transfer: Transfer) {
            curl_multi_remove_handle(multi, transfer.handle)
            transfers[transfer.id] = nil
            byHandle[transfer.handle] = nil
            transfer.close()
            if spareHandles.count < 64 {
                curl_easy_reset(transfer.handle)
                spareHandles.append(transfer.handle)
            } else {
                curl_easy_cleanup(transfer.handle)
            }
        }

        while true {
            let (commands, stopping) = shared.withLock { shared in
                let commands = shared.inbox
                shared.inbox = []
                return (commands, shared.state != .running)
            }
            for command in commands {
                switch command {
                case .start(let id, let request, let sink):
                    guard let handle = spareHandles.popLast() ?? curl_easy_init() else {
                        Transfer.failWithoutHandle(sink, DeckhandError(.internalError, "curl_easy_init failed"))
                        continue
                    }
                    let transfer = Transfer(id: id, handle: handle, request: request, sink: sink)
                    transfers[id] = transfer
                    byHandle[handle] = transfer
                    let configured = transfer.configure(request)
                    if configured != CURLE_OK {
                        transfer.fail(transfer.error(for: configured))
                        finish(transfer)
                        continue
                    }
                    let added = curl_multi_add_handle(multi, handle)
                    if added != CURLM_OK {
                        transfer.fail(
                            DeckhandError(.internalError, "curl_multi_add_handle failed: \(added.rawValue)")
                        )
                        finish(transfer)
                    }
                case .unpause(let id):
                    guard let transfer = transfers[id] else { continue }
                    curl_easy_pause(transfer.handle, CURLPAUSE_CONT)
                case .cancel(let id):
                    guard let transfer = transfers[id] else { continue }
                    transfer.fail(CancellationError())
                    finish(transfer)
                }
            }
            if stopping { break }

            curl_multi_perform(multi, &runningCount)
            var remaining: Int32 = 0
            while let message = curl_multi_info_read(multi, &remaining) {
                guard message.pointee.msg == CURLMSG_DONE,
                    let handle = message.pointee.easy_handle,
                    let transfer = byHandle[handle]
                else { continue }
                let result = message.pointee.data.result
                if result != CURLE_OK {
                    logger.debug(
                        "HTTP transfer failed",
                        metadata: [LogKey.error.rawValue: "\(transfer.summary): curl error \(result.rawValue)"]
                    )
                }
                transfer.complete(result)
                finish(transfer)
            }
            curl_multi_poll(multi, nil, 0, 1000, nil)
        }

        let shutdownError = DeckhandError(.httpShutdown, "the HTTP client was shut down")
        for transfer in Array(transfers.values) {
            transfer.fail(shutdownError)
            finish(transfer)
        }
        let waiters = shared.withLock { shared in
            shared.state = .stopped
            shared.inbox = []
            let waiters = shared.stopWaiters
            shared.stopWaiters = []
            return waiters
        }
        for handle in spareHandles { curl_easy_cleanup(handle) }
        curl_multi_cleanup(multi)
        for waiter in waiters { waiter.resume() }
    }
}
