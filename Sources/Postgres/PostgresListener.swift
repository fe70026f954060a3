import CLibPQ
import DeckhandCore
import DeckhandPOSIX
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One `LISTEN` on its own connection and its own OS thread, which sleeps in `poll` on the connection's socket
/// and a wake-up pipe, feeds notifications to a stream, and reconnects after a lost connection.
final class PostgresListener: Sendable {
    let channel: String
    let url: PostgresURL
    let connectTimeout: Duration
    let session: PostgresSessionSettings
    let logger: Logger
    private let continuation: AsyncThrowingStream<PostgresNotification, any Error>.Continuation
    private let wakePipe: WakePipe
    private let stopped = Atomic<Bool>(false)
    private let ready = Mutex<CheckedContinuation<Void, any Error>?>(nil)

    init(
        channel: String,
        url: PostgresURL,
        connectTimeout: Duration,
        session: PostgresSessionSettings,
        continuation: AsyncThrowingStream<PostgresNotification, any Error>.Continuation,
        logger: Logger
    ) throws {
        self.channel = channel
        self.url = url
        self.connectTimeout = connectTimeout
        self.session = session
        self.continuation = continuation
        self.logger = logger
        wakePipe = try WakePipe()
    }

    /// Starts the thread and returns when the first `LISTEN` succeeded (or throws why it did not).
    func start() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            ready.withLock { $0 = continuation }
            let thread = Thread { [self] in self.run() }
            thread.name = "deckhand-postgres-listen"
            thread.start()
        }
    }

    /// Asks the thread to stop; it finishes the stream and closes its connection.
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        wakePipe.wake()
    }

    private var isStopped: Bool { stopped.load(ordering: .acquiring) }

    /// Resumes `start()` once; returns whether it was still waiting.
    @discardableResult
    private func signalReady(_ error: (any Error)?) -> Bool {
        guard let waiter = ready.withLock({ $0.take() }) else { return false }
        if let error { waiter.resume(throwing: error) } else { waiter.resume() }
        return true
    }

    private func run() {
        var connection: PostgresConnection?
        var backoff = 0.1
        while !isStopped {
            guard let current = connection else {
                do {
                    connection = try connect()
                    backoff = 0.1
                    signalReady(nil)
                } catch {
                    if signalReady(error) {
                        continuation.finish(throwing: error)
                        return
                    }
                    logger.warning(
                        "cannot listen again on a PostgreSQL channel; retrying",
                        metadata: [LogKey.error.rawValue: "\(error)", LogKey.postgresChannel.rawValue: "\(channel)"]
                    )
                    waitForWake(timeoutMilliseconds: Int32(backoff * 1000))
                    backoff = min(backoff * 2, 5)
                }
                continue
            }
            var descriptors = [
                pollfd(fd: PQsocket(current.handle), events: Int16(POLLIN), revents: 0),
                wakePipe.pollDescriptor,
            ]
            let ready = poll(&descriptors, 2, 5000)
            if ready < 0, errno != EINTR {
                current.close()
                connection = nil
                continue
            }
            if descriptors[1].revents != 0 { wakePipe.drain() }
            if descriptors[0].revents != 0 {
                if PQconsumeInput(current.handle) == 0 || PQstatus(current.handle) != CONNECTION_OK {
                    logger.notice(
                        "lost the PostgreSQL LISTEN connection; reconnecting",
                        metadata: [LogKey.postgresChannel.rawValue: "\(channel)"]
                    )
                    current.close()
                    connection = nil
                    continue
                }
                while let notification = PQnotifies(current.handle) {
                    let value = notification.pointee
                    continuation.yield(
                        PostgresNotification(
                            channel: String(cString: value.relname),
                            payload: value.extra.map { String(cString: $0) } ?? "",
                            senderPID: value.be_pid
                        )
                    )
                    PQfreemem(notification)
                }
            }
        }
        connection?.close()
        signalReady(ConnectionPool.closedError())
        continuation.finish()
    }

    private func connect() throws -> PostgresConnection {
        let connection = try PostgresConnection.connect(
            url: url,
            connectTimeout: connectTimeout,
            session: session,
            logger: logger
        )
        guard let escaped = PQescapeIdentifier(connection.handle, channel, channel.utf8.count) else {
            connection.close()
            throw DeckhandError(.postgresClient, "cannot quote the channel name \"\(channel)\"")
        }
        let quoted = String(cString: escaped)
        PQfreemem(escaped)
        do {
            try connection.simpleQuery("LISTEN \(quoted)")
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    private func waitForWake(timeoutMilliseconds: Int32) {
        var descriptor = wakePipe.pollDescriptor
        if poll(&descriptor, 1, timeoutMilliseconds) > 0 { wakePipe.drain() }
    }
}
