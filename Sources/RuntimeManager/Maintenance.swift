import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import Logging
import Messaging
import RuntimeBackends
import ServiceLifecycle

extension RuntimeWorker {
    // MARK: Warm pool

    /// Starts warm sandboxes until every pool target of an enabled backend is met. Concurrent refills (from
    /// several workers) are serialized per pool by an advisory lock, so the pool never overshoots.
    public func refill() async throws {
        for target in settings.warmPool where target.size > 0 {
            guard let backend = backends[target.backend] else { continue }
            let reserved = try await store.reserveWarm(
                target: target,
                worker: configuration.workerID,
                lease: settings.lease,
                makeKey: { Self.makeSessionKey() }
            )
            guard !reserved.isEmpty else { continue }
            logger.info(
                "refilling the warm pool",
                metadata: [
                    LogKey.warmPool.rawValue: "\(target.backend.rawValue):\(target.image)",
                    LogKey.warmStarting.rawValue: "\(reserved.count)",
                ]
            )
            try await withThrowingTaskGroup(of: Void.self) { group in
                for record in reserved {
                    group.addTask {
                        try await self.bringUp(record, backend: backend, leftovers: false, logger: self.logger)
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    // MARK: Maintenance

    /// Every `runtime.maintenance_interval`, until a graceful shutdown: idle timers, abandoned warm starts and
    /// the pool refill, by whichever worker gets the maintenance lock.
    func maintenanceLoop() async {
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            await maintain()
            do {
                try await cancelWhenGracefulShutdown {
                    try await Task.sleep(for: self.settings.maintenanceInterval)
                }
            } catch {
                return
            }
        }
    }

    /// One round of maintenance; returns false when another worker holds the maintenance lock.
    @discardableResult
    public func maintain() async -> Bool {
        do {
            guard
                let due = try await store.claimMaintenance(
                    worker: configuration.workerID,
                    lease: settings.lease,
                    pauseAfter: settings.idlePauseAfter,
                    stopAfter: settings.idleStopAfter,
                    destroyAfter: settings.idleDestroyAfter
                )
            else { return false }
            for record in due {
                do {
                    try await applyIdleRule(to: record)
                } catch {
                    logger.warning(
                        "maintenance failed on a sandbox",
                        metadata: [LogKey.sandboxID.rawValue: "\(record.id)", LogKey.error.rawValue: "\(error)"]
                    )
                }
            }
            try await refill()
            return true
        } catch {
            logger.warning("maintenance failed", metadata: [LogKey.error.rawValue: "\(error)"])
            return true
        }
    }

    /// What a sandbox claimed for maintenance gets: an abandoned warm start is removed; an idle one is
    /// destroyed, stopped or paused, whichever of its timers ran out last.
    func applyIdleRule(to record: SandboxRecord) async throws {
        guard let backend = backends[record.backend] else {
            try await store.setStatus(id: record.id, record.status)
            return
        }
        if record.status == .starting {
            logger.notice("removing an abandoned warm start", metadata: [LogKey.sandboxID.rawValue: "\(record.id)"])
            try await removeLeftovers(of: record, backend: backend)
            try await store.delete(id: record.id)
            return
        }
        var idle = Duration.seconds(Date().timeIntervalSince(record.lastActiveAt))
        func due(_ after: Duration) -> Bool { after > .zero && idle >= after }
        // A running sandbox may be used by a client that touches no row (a runtime-API session's): its server's
        // own idle time decides when it is more recent.
        if record.status == .running, let served = await idleTime(of: record), served < idle {
            idle = served
            if !due(settings.idleDestroyAfter), !due(settings.idleStopAfter), !due(settings.idlePauseAfter) {
                try await store.touch(id: record.id, idleFor: served)
                try await store.setStatus(id: record.id, record.status)
                return
            }
        }
        let reference = record.reference ?? ""
        do {
            if due(settings.idleDestroyAfter) {
                try await backendCall { try await backend.destroy(reference) }
                try await store.delete(id: record.id)
                await announce(record, "destroyed", reason: "idle")
            } else if due(settings.idleStopAfter), record.status != .stopped {
                try await backendCall { try await backend.stop(reference) }
                try await store.setStatus(id: record.id, .stopped)
                await announce(record, "stopped", reason: "idle")
            } else if due(settings.idlePauseAfter), record.status == .running {
                try await backendCall { try await backend.pause(reference) }
                try await store.setStatus(id: record.id, .paused)
                await announce(record, "paused", reason: "idle")
            } else {
                try await store.setStatus(id: record.id, record.status)
            }
        } catch let failure as BackendFailure {
            if (try? await backend.inspect(reference)) == .missing {
                try await markLost(record, reason: failure.message, logger: logger)
            } else {
                try await store.setStatus(id: record.id, record.status)
                throw DeckhandError(failure.code, failure.message)
            }
        }
    }

    /// How long ago the sandbox's server last served an authenticated request (`/server_info`'s `idle_time`, an
    /// open route that counts as no use); nil when it does not answer within 2 s.
    func idleTime(of record: SandboxRecord) async -> Duration? {
        guard let url = record.url else { return nil }
        var request = HTTPRequest(method: .get, url: url + "/server_info")
        request.timeout = .seconds(2)
        guard let response = try? await http.execute(request), response.status == 200,
            let info = try? JSONValue(parsing: response.body), let seconds = info["idle_time"]?.doubleValue,
            seconds >= 0
        else { return nil }
        return .milliseconds(Int64(seconds * 1000))
    }

    // MARK: Node lease

    /// Every third of `runtime.node_lease`, until a graceful shutdown: ``keepNodeLease()``.
    func nodeLeaseLoop() async {
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            await keepNodeLease()
            do {
                try await cancelWhenGracefulShutdown {
                    try await Task.sleep(for: self.settings.nodeLease / 3)
                }
            } catch {
                return
            }
        }
    }

    /// Renews this node's lease — after the node was taken for dead, reconciling again, which removes the
    /// sandboxes the database gave up on — and takes the other nodes whose lease ran out for dead: their
    /// sandboxes are marked lost (and announced), so their conversations get new ones when they next need one.
    /// Commands that waited in a dead node's queue come back to the shared queue by themselves (its messages
    /// expire after `runtime.node_lease`).
    public func keepNodeLease() async {
        do {
            if try await store.renewNode(lease: settings.nodeLease, advertiseHost: configuration.advertiseHost) {
                logger.warning("this node had been taken for dead: removing the sandboxes given up on")
                try await reconcile()
            }
            for record in try await store.sweepLapsedNodes() {
                logger.warning(
                    "sandbox lost with its node",
                    metadata: [
                        LogKey.sandboxID.rawValue: "\(record.id)", LogKey.reason.rawValue: "\(record.reason ?? "")",
                    ]
                )
                await announce(record, "lost", reason: record.reason)
            }
        } catch {
            logger.warning("cannot keep the node's lease", metadata: [LogKey.error.rawValue: "\(error)"])
        }
    }

    // MARK: Reconciliation

    /// Makes the backends and this node's rows of the `sandboxes` table agree, at start: a sandbox the backend
    /// runs but the table does not know or gave up on (on any node: nodes on one machine share its engine and
    /// folders) is removed; a row of this node whose sandbox the backend no longer has is marked `lost`; a process
    /// sandbox that died with its worker is recorded `stopped` (its folder is kept, and it is started again in
    /// it when its conversation next needs it). Nothing is provisioned here: a conversation gets a sandbox when
    /// it is used, so a restart does not start one for every earlier conversation. A backend that does not
    /// answer is skipped (and logged). Other nodes' rows are theirs: a worker never judges them by what its own
    /// backends list.
    public func reconcile() async throws {
        let adopted = try await store.adoptUnassigned()
        if adopted > 0 {
            logger.notice(
                "this node took the sandboxes recorded before nodes were",
                metadata: [LogKey.rows.rawValue: "\(adopted)"]
            )
        }
        for (kind, backend) in backends {
            let listed: [ListedSandbox]
            do {
                listed = try await backend.list()
            } catch {
                logger.error(
                    "cannot list the \(kind.rawValue) sandboxes to reconcile them",
                    metadata: [LogKey.error.rawValue: "\(error)"]
                )
                continue
            }
            // Read after listing: a row is written before its sandbox is created, so every sandbox listed by
            // a worker that is provisioning right now is known here.
            let records = try await store.all()
            // A sandbox whose row is lost was given up on (its node was taken for dead): it goes too.
            let known = Set(records.filter { $0.backend == kind && $0.status != .lost }.map(\.id))
            for orphan in listed where !known.contains(orphan.sandboxID) {
                logger.notice(
                    "removing a sandbox the database does not know, or gave up on",
                    metadata: [
                        LogKey.sandboxID.rawValue: "\(orphan.sandboxID)",
                        LogKey.sandboxReference.rawValue: "\(orphan.reference)",
                    ]
                )
                try? await backend.destroy(orphan.reference)
            }
            let states = Dictionary(listed.map { ($0.sandboxID, $0.state) }, uniquingKeysWith: { first, _ in first })
            for record in records where record.backend == kind && record.node == store.node {
                guard [.warm, .running, .paused, .stopped].contains(record.status) else { continue }
                switch states[record.id] ?? .missing {
                case .missing:
                    try await markLost(record, reason: "the \(kind.rawValue) backend no longer has it", logger: logger)
                case .stopped where record.status != .stopped:
                    if record.conversationID == nil {
                        // A warm sandbox that died holds no one's work: the pool makes another.
                        try await markLost(record, reason: "the warm sandbox stopped", logger: logger)
                        if let reference = record.reference { try? await backend.destroy(reference) }
                    } else {
                        try await store.setStatus(id: record.id, .stopped)
                        await announce(record, "stopped", reason: "it stopped while no worker watched it")
                    }
                default:
                    continue
                }
            }
        }
    }
}
