import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import Logging
import Messaging
import Postgres
import RuntimeBackends

#if canImport(Glibc)
import Glibc
#endif

/// A backend operation failed for this sandbox (as opposed to PostgreSQL or RabbitMQ failing): the
/// provision ends with `sandbox_failed` instead of being retried.
struct BackendFailure: Error, CustomStringConvertible {
    var code: DeckhandError.Code
    var message: String

    init(_ error: any Error) {
        if let error = error as? BackendFailure {
            self = error
        } else if let error = error as? DeckhandError {
            code = error.code
            message = error.message
        } else {
            code = .runtimeBackend
            message = "\(error)"
        }
    }

    var description: String { "\(code): \(message)" }
}

/// Runs a backend call, turning its errors into ``BackendFailure`` — except an engine that does not answer
/// (`unavailable`: a Docker daemon restarting, say), which is transient: the command is retried later.
func backendCall<T: Sendable>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch is CancellationError {
        throw CancellationError()
    } catch let error as DeckhandError where error.code == .unavailable {
        throw error
    } catch {
        throw BackendFailure(error)
    }
}

/// A command about a sandbox another node holds: only that node's workers may act on it, so the command is
/// sent on to its queue (``RuntimeWorker/handle(_:)``).
struct HeldElsewhere: Error {
    let node: String
    let sandbox: UUID
}

extension RuntimeWorker {
    // MARK: provision

    func provision(_ request: ProvisionRequest, logger: Logger) async throws {
        var logger = logger
        logger[metadataKey: LogKey.conversationID.rawValue] = "\(request.conversationID)"
        let kind = request.backend ?? configuration.defaultBackend
        guard let backend = backends[kind] else {
            try await sendFailed(
                conversation: request.conversationID,
                sandbox: nil,
                backend: kind,
                code: .runtimeBackend,
                reason: "the \(kind.rawValue) sandbox backend is not enabled on this runtime worker"
            )
            return
        }
        let image = kind == .process ? RuntimeSettings.processImage : (request.image ?? settings.image)
        // Waiting for another worker's provision is bounded: past this, the command is retried later.
        let patience = ContinuousClock.now + settings.aliveTimeout + settings.lease * 2 + .seconds(10)

        while true {
            try Task.checkCancellation()
            let existing = try await store.liveSandbox(conversation: request.conversationID)
            switch ProvisionStep.next(status: existing?.status, leaseUntil: existing?.leaseUntil, now: Date()) {
            case .claimOrCreate:
                break
            case .handOut:
                guard let existing else { continue }
                if try await handOut(existing, logger: logger) { return }
                continue
            case .wait:
                guard ContinuousClock.now < patience else {
                    throw DeckhandError(
                        .timeout,
                        "another worker's provision of sandbox \(existing?.id.uuidString ?? "?") is not done"
                    )
                }
                try await Task.sleep(for: .milliseconds(100))
                continue
            case .takeOver:
                guard let existing,
                    try await store.takeOver(id: existing.id, worker: configuration.workerID, lease: settings.lease)
                else { continue }
                logger.notice(
                    "taking over an interrupted provision",
                    metadata: [LogKey.sandboxID.rawValue: "\(existing.id)"]
                )
                // The interrupted sandbox keeps the backend it was started on.
                try await bringUp(
                    existing,
                    backend: backends[existing.backend] ?? backend,
                    leftovers: true,
                    requested: request,
                    logger: logger
                )
                return
            }

            do {
                if request.fitsWarmPool,
                    let warm = try await store.claimWarm(
                        conversation: request.conversationID,
                        backend: kind,
                        image: image
                    )
                {
                    if try await isUsable(warm) {
                        logger.debug("claimed a warm sandbox", metadata: [LogKey.sandboxID.rawValue: "\(warm.id)"])
                        try await sendReady(warm, fromWarmPool: true)
                        await announce(warm, "running")
                        await requestRefill()
                        return
                    }
                    // A warm sandbox holds no one's work: one that does not answer is replaced (and removed, when
                    // it is this node's: another node's backend is out of reach).
                    try await markLost(warm, reason: "the warm sandbox no longer answers", logger: logger)
                    if warm.node == store.node, let backend = backends[warm.backend], let reference = warm.reference {
                        try? await backend.destroy(reference)
                    }
                    continue
                }
            } catch let error as DeckhandError where error.postgresSQLState == "23505" {
                continue  // the conversation got a sandbox meanwhile: answer with that one
            }

            let outcome = try await store.insertStarting(
                id: UUID(),
                backend: kind,
                image: image,
                sessionAPIKey: Self.makeSessionKey(),
                conversation: request.conversationID,
                worker: configuration.workerID,
                lease: settings.lease
            )
            switch outcome {
            case .inserted(let record):
                try await bringUp(record, backend: backend, leftovers: false, requested: request, logger: logger)
                return
            case .conversationTaken:
                continue
            }
        }
    }

    /// Creates, starts and waits for a sandbox leased to this worker, then records it `running` (for a
    /// conversation, which then gets `sandbox_ready`) or `warm`. A backend failure marks the sandbox `error`
    /// and answers `sandbox_failed` (a warm one is just removed). `leftovers`: an earlier attempt may have
    /// left a container or folder behind; remove it first.
    func bringUp(
        _ record: SandboxRecord,
        backend: any SandboxBackend,
        leftovers: Bool,
        requested: ProvisionRequest? = nil,
        logger: Logger
    ) async throws {
        var logger = logger
        logger[metadataKey: LogKey.sandboxID.rawValue] = "\(record.id)"
        await announce(record, "starting")
        var asked = spec(for: record)
        asked.environment.merge(requested?.environment ?? [:]) { _, requested in requested }
        asked.resourceFactor = max(1, requested?.resourceFactor ?? 1)
        asked.launch = requested?.launch
        let spec = asked
        let started = ContinuousClock.now
        let url: String
        do {
            url = try await withLeaseRenewal(record.id) {
                if leftovers {
                    try await self.removeLeftovers(of: record, backend: backend)
                }
                let created = try await backendCall { try await backend.create(spec) }
                try await self.store.setReference(id: record.id, reference: created)
                let started = try await backendCall { try await backend.start(created, spec: spec) }
                try await self.waitUntilAlive(url: started.url, backend: backend, reference: created)
                try await self.adoptSessionKey(of: record.id, started, spec: spec)
                return started.url
            }
        } catch let failure as BackendFailure {
            logger.warning("sandbox failed to start", metadata: [LogKey.error.rawValue: "\(failure)"])
            try? await removeLeftovers(of: record, backend: backend)
            if let conversation = record.conversationID {
                try await store.setStatus(id: record.id, .error, reason: failure.message)
                await announce(record, "error", reason: failure.message)
                try await sendFailed(
                    conversation: conversation,
                    sandbox: record.id,
                    backend: record.backend,
                    code: failure.code,
                    reason: failure.message
                )
            } else {
                try await store.delete(id: record.id)
                await announce(record, "error", reason: failure.message)
            }
            return
        }
        let status: SandboxRecord.Status = record.conversationID == nil ? .warm : .running
        guard
            let finished = try await store.finishStarting(
                id: record.id,
                worker: configuration.workerID,
                status: status,
                url: url
            )
        else {
            // Another worker took the provision over (this one was too slow to renew its lease): it answers.
            logger.notice("lost the lease on a sandbox while starting it; leaving it to the worker that took over")
            return
        }
        logger.info(
            "sandbox \(status.rawValue)",
            metadata: [LogKey.durationMilliseconds.rawValue: "\((ContinuousClock.now - started).milliseconds)"]
        )
        await announce(finished, status.rawValue)
        if finished.conversationID != nil { try await sendReady(finished) }
    }

    func spec(for record: SandboxRecord) -> SandboxSpec {
        SandboxSpec(
            id: record.id,
            image: record.image,
            sessionAPIKey: record.sessionAPIKey ?? "",
            environment: settings.environment
        )
    }

    /// Records the session key the backend chose for the started sandbox, when it chose one other than the
    /// spec's (a Runtime API decides its runtimes' keys); returns the key the sandbox demands.
    @discardableResult
    func adoptSessionKey(of id: UUID, _ started: StartedSandbox, spec: SandboxSpec) async throws -> String {
        guard let key = started.sessionAPIKey, key != spec.sessionAPIKey else { return spec.sessionAPIKey }
        try await store.setSessionKey(id: id, key)
        return key
    }

    /// Removes whatever an interrupted attempt left of this sandbox in the backend.
    func removeLeftovers(of record: SandboxRecord, backend: any SandboxBackend) async throws {
        try await backendCall {
            if let reference = record.reference { try await backend.destroy(reference) }
            for listed in try await backend.list() where listed.sandboxID == record.id {
                try await backend.destroy(listed.reference)
            }
        }
    }

    /// Runs `body` while renewing this worker's lease on `id` every third of the lease.
    func withLeaseRenewal<T: Sendable>(_ id: UUID, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                while true {
                    try await Task.sleep(for: self.settings.lease / 3)
                    _ = try? await self.store.renewLease(
                        id: id,
                        worker: self.configuration.workerID,
                        lease: self.settings.lease
                    )
                }
            }
            group.addTask { try await body() }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            throw CancellationError()
        }
    }

    /// Polls `/alive` until the server says `ok`; fails when the deadline passes or the sandbox stops.
    func waitUntilAlive(url: String, backend: any SandboxBackend, reference: String) async throws {
        let deadline = ContinuousClock.now + settings.aliveTimeout
        var nextInspection = ContinuousClock.now + .milliseconds(500)
        while ContinuousClock.now < deadline {
            if await answersAlive(url) { return }
            if ContinuousClock.now >= nextInspection {
                nextInspection = ContinuousClock.now + .milliseconds(500)
                let state = try await backendCall { try await backend.inspect(reference) }
                if state == .stopped || state == .missing {
                    throw BackendFailure(
                        DeckhandError(.runtimeNotAlive, "the sandbox exited before its server answered /alive")
                    )
                }
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw BackendFailure(
            DeckhandError(
                .runtimeNotAlive,
                "the sandbox's server did not answer /alive within \(settings.aliveTimeout) (runtime.alive_timeout)"
            )
        )
    }

    func answersAlive(_ url: String) async -> Bool {
        var request = HTTPRequest(method: .get, url: url + "/alive")
        request.connectTimeout = .seconds(1)
        request.timeout = .seconds(2)
        guard let response = try? await http.execute(request), response.status == 200 else { return false }
        return response.text.contains("\"ok\"")
    }

    /// A claimed or warm sandbox is handed out only if its server still answers.
    func isUsable(_ record: SandboxRecord) async throws -> Bool {
        guard let url = record.url else { return false }
        return await answersAlive(url)
    }

    /// Resumes a paused sandbox or starts a stopped one, and records it running.
    func wake(_ record: SandboxRecord) async throws -> SandboxRecord {
        guard let backend = backends[record.backend], let reference = record.reference else {
            throw BackendFailure(
                DeckhandError(.runtimeBackend, "the \(record.backend.rawValue) backend is not enabled here")
            )
        }
        var url = record.url ?? ""
        var key = record.sessionAPIKey
        switch record.status {
        case .paused:
            try await backendCall { try await backend.resume(reference) }
        case .stopped:
            let spec = spec(for: record)
            let started = try await backendCall { try await backend.start(reference, spec: spec) }
            try await waitUntilAlive(url: started.url, backend: backend, reference: reference)
            url = started.url
            key = try await adoptSessionKey(of: record.id, started, spec: spec)
        default:
            break
        }
        try await store.setStatus(id: record.id, .running, url: url)
        try await store.touch(id: record.id)
        var resumed = record
        resumed.status = .running
        resumed.url = url
        resumed.sessionAPIKey = key
        await announce(resumed, "running")
        return resumed
    }

    /// Marks a sandbox lost: its conversation may get another. Nothing is removed — a sandbox is declared
    /// lost when its backend no longer has it, and a workspace is never thrown away on a guess.
    func markLost(_ record: SandboxRecord, reason: String, logger: Logger) async throws {
        logger.warning(
            "sandbox lost",
            metadata: [LogKey.sandboxID.rawValue: "\(record.id)", LogKey.reason.rawValue: "\(reason)"]
        )
        try await store.setStatus(id: record.id, .lost, reason: reason)
        await announce(record, "lost", reason: reason)
    }

    // MARK: Recovery

    /// Hands the conversation's existing sandbox out again (`sandbox_ready`), bringing it back first if
    /// needed; returns false when the backend no longer has it (marked lost: the caller provisions another).
    /// A sandbox that exists but cannot be brought back is kept, with its files, and marked `error`; its
    /// conversation gets `sandbox_failed`.
    func handOut(_ record: SandboxRecord, logger: Logger) async throws -> Bool {
        var logger = logger
        logger[metadataKey: LogKey.sandboxID.rawValue] = "\(record.id)"
        do {
            guard let recovered = try await recover(record, logger: logger) else { return false }
            try await sendReady(recovered)
            return true
        } catch let failure as BackendFailure {
            if let backend = backends[record.backend], let reference = record.reference,
                (try? await backend.inspect(reference)) == .missing
            {
                try await markLost(record, reason: failure.message, logger: logger)
                return false
            }
            logger.error(
                "cannot bring the sandbox back; its files are kept",
                metadata: [LogKey.error.rawValue: "\(failure)"]
            )
            try await store.setStatus(id: record.id, .error, reason: failure.message)
            await announce(record, "error", reason: failure.message)
            if let conversation = record.conversationID {
                try await sendFailed(
                    conversation: conversation,
                    sandbox: record.id,
                    backend: record.backend,
                    code: failure.code,
                    reason: failure.message
                )
            }
            return true
        }
    }

    /// The sandbox answering again (touched: it is handed out now), or nil when its backend no longer has it
    /// (then marked lost). What the backend says decides: a paused sandbox is resumed, a stopped or exited
    /// one started again in its files, a running one that does not answer is probed with back-off for
    /// `runtime.probe_deadline` (unreachable for now: a busy host, a server restarting) and then restarted in
    /// place.
    func recover(_ record: SandboxRecord, logger: Logger) async throws -> SandboxRecord? {
        guard record.node == store.node else { return try await answering(record) }
        guard let backend = backends[record.backend], let reference = record.reference else {
            throw BackendFailure(
                DeckhandError(.runtimeBackend, "the \(record.backend.rawValue) backend is not enabled here")
            )
        }
        let deadline = ContinuousClock.now + settings.probeDeadline
        var backoff = Backoff(minimum: .milliseconds(100), maximum: .seconds(2))
        while true {
            if record.status == .running || record.status == .warm, let url = record.url, await answersAlive(url) {
                try await store.touch(id: record.id)
                return record
            }
            var woken = record
            switch try await backendCall({ try await backend.inspect(reference) }) {
            case .missing:
                try await markLost(
                    record,
                    reason: "the \(record.backend.rawValue) backend no longer has it",
                    logger: logger
                )
                return nil
            case .paused:
                woken.status = .paused
            case .stopped, .created:
                woken.status = .stopped
            case .running where record.status == .paused || record.status == .stopped:
                woken.status = .running  // another worker woke it: only the row is behind
            case .running:
                guard ContinuousClock.now >= deadline else {
                    try await Task.sleep(for: backoff.next())
                    continue
                }
                logger.notice("the sandbox runs but has not answered for \(settings.probeDeadline): restarting it")
                try await backendCall { try await backend.stop(reference) }
                woken.status = .stopped
            }
            if record.status == .running { logger.notice("bringing the sandbox back (\(woken.status.rawValue))") }
            return try await wake(woken)
        }
    }

    /// Another node's sandbox, if it answers: only its own node's workers can ask their backend about it, so
    /// one that does not answer is left to them (``HeldElsewhere``: the command goes to that node's queue).
    func answering(_ record: SandboxRecord) async throws -> SandboxRecord {
        if record.status == .running || record.status == .warm, let url = record.url, await answersAlive(url) {
            try await store.touch(id: record.id)
            return record
        }
        throw HeldElsewhere(node: record.node, sandbox: record.id)
    }

    /// A random 256-bit session key, hex.
    static func makeSessionKey() -> String {
        (0..<4).map { _ in String(format: "%016llx", UInt64.random(in: .min ... .max)) }.joined()
    }

    // MARK: pause, resume, stop, destroy

    func lifecycle(_ command: RuntimeCommand, _ target: SandboxTarget, logger: Logger) async throws {
        let record: SandboxRecord?
        if let id = target.sandboxID {
            record = try await store.sandbox(id: id)
        } else if let conversation = target.conversationID {
            record = try await store.liveSandbox(conversation: conversation)
        } else {
            throw MalformedCommand(description: "\(command.rawValue) names neither a sandbox nor a conversation")
        }
        guard let record, record.status != .lost, record.status != .error, record.status != .starting else {
            logger.debug("\(command.rawValue): no such live sandbox; nothing to do")
            return
        }
        guard record.node == store.node else { throw HeldElsewhere(node: record.node, sandbox: record.id) }
        guard let backend = backends[record.backend] else {
            throw DeckhandError(.runtimeBackend, "the \(record.backend.rawValue) backend is not enabled here")
        }
        do {
            switch command {
            case .pause where record.status == .running || record.status == .warm:
                try await backendCall { try await backend.pause(record.reference ?? "") }
                try await store.setStatus(id: record.id, .paused)
                await announce(record, "paused")
            case .resume where record.status == .paused || record.status == .stopped:
                let resumed = try await wake(record)
                if resumed.conversationID != nil { try await sendReady(resumed) }
            case .stop where record.status == .running || record.status == .paused || record.status == .warm:
                try await backendCall { try await backend.stop(record.reference ?? "") }
                try await store.setStatus(id: record.id, .stopped)
                await announce(record, "stopped")
            case .destroy:
                if let reference = record.reference {
                    try await backendCall { try await backend.destroy(reference) }
                }
                try await store.delete(id: record.id)
                await announce(record, "destroyed")
            default:
                logger.debug("\(command.rawValue): the sandbox is \(record.status.rawValue) already")
            }
        } catch let failure as BackendFailure {
            if let reference = record.reference,
                (try? await backend.inspect(reference)) == .missing
            {
                try await markLost(record, reason: failure.message, logger: logger)
                return
            }
            throw DeckhandError(failure.code, failure.message)
        }
    }
}
