import DeckhandCore
import Foundation
import Postgres

/// One row of `sandboxes`.
public struct SandboxRecord: Sendable, Equatable {
    public enum Status: String, Sendable {
        case warm, starting, running, paused, stopped, error, lost
    }

    public var id: UUID
    public var backend: RuntimeSettings.Backend
    public var reference: String?
    public var image: String
    public var status: Status
    public var url: String?
    public var sessionAPIKey: String?
    public var conversationID: UUID?
    public var workerID: String?
    public var leaseUntil: Date?
    public var reason: String?
    public var lastActiveAt: Date
    /// The node whose runtime workers manage it (`node.id`).
    public var node: String

    public init(row: PostgresRow) throws {
        id = try row.decode(UUID.self, "id")
        let backendName = try row.decode(String.self, "backend")
        guard let backend = RuntimeSettings.Backend(rawValue: backendName) else {
            throw DeckhandError(.internalError, "sandbox \(id) has a backend this worker does not know: \(backendName)")
        }
        self.backend = backend
        reference = try row.decode(String?.self, "backend_ref")
        image = try row.decode(String.self, "image")
        status = Status(rawValue: try row.decode(String.self, "status")) ?? .error
        url = try row.decode(String?.self, "url")
        sessionAPIKey = try row.decode(String?.self, "session_api_key")
        conversationID = try row.decode(UUID?.self, "conversation_id")
        workerID = try row.decode(String?.self, "worker_id")
        leaseUntil = try row.decode(Date?.self, "lease_until")
        reason = try row.decode(String?.self, "reason")
        lastActiveAt = try row.decode(Date.self, "last_active_at")
        node = try row.decode(String.self, "node")
    }
}

/// The runtime workers' statements on `sandboxes` and `processed_messages`.
public struct SandboxStore: Sendable {
    public let postgres: PostgresClient
    /// Names the deployment in advisory-lock keys (advisory locks are database-wide; schemas are not).
    public let deployment: String
    /// The node this store's worker runs on (`node.id`): the rows it makes are this node's, and its
    /// maintenance and reconciliation see only those.
    public let node: String

    public init(postgres: PostgresClient, deployment: String, node: String = NodeSettings.hostName) {
        self.postgres = postgres
        self.deployment = deployment
        self.node = node
    }

    public static let columns =
        "id, backend, backend_ref, image, status, url, session_api_key, conversation_id, worker_id, lease_until, reason, last_active_at, node"
    /// Statuses of a sandbox that no longer counts (its conversation may get another).
    public static let dead = "('lost', 'error')"

    /// A 64-bit advisory-lock key for `name` within this deployment (FNV-1a).
    public func lockKey(_ name: String) -> Int64 {
        Int64(bitPattern: FNV1a.hash("deckhand.runtime:\(deployment):\(name)"))
    }

    public func sandbox(id: UUID) async throws -> SandboxRecord? {
        try await postgres.query("SELECT \(Self.columns) FROM sandboxes WHERE id = $1", [.uuid(id)]).first
            .map(SandboxRecord.init)
    }

    /// The conversation's sandbox that still counts, if any.
    public func liveSandbox(conversation: UUID) async throws -> SandboxRecord? {
        try await postgres.query(
            "SELECT \(Self.columns) FROM sandboxes WHERE conversation_id = $1 AND status NOT IN \(Self.dead)",
            [.uuid(conversation)]
        ).first.map(SandboxRecord.init)
    }

    public func all() async throws -> [SandboxRecord] {
        try await postgres.query("SELECT \(Self.columns) FROM sandboxes ORDER BY created_at").map(SandboxRecord.init)
    }

    /// How many warm sandboxes each backend holds (for `/metrics`).
    public func warmCounts() async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try await postgres.query(
            "SELECT backend, count(*)::int AS n FROM sandboxes WHERE status = 'warm' GROUP BY backend"
        ) {
            counts[try row.decode(String.self, "backend")] = try row.decode(Int.self, "n")
        }
        return counts
    }

    /// Gives this node the rows of no node (made before nodes were recorded, on the one node there was);
    /// returns how many.
    @discardableResult
    public func adoptUnassigned() async throws -> Int {
        try await postgres.execute("UPDATE sandboxes SET node = $1 WHERE node = ''", [.text(node)])
    }

    /// Hands the oldest warm sandbox of `backend` and `image` to `conversation` (skipping rows another
    /// transaction holds); nil when the pool is empty. A conversation that got a sandbox meanwhile makes this
    /// fail with a unique violation.
    public func claimWarm(
        conversation: UUID,
        backend: RuntimeSettings.Backend,
        image: String
    ) async throws
        -> SandboxRecord?
    {
        try await postgres.query(
            """
            UPDATE sandboxes SET conversation_id = $1, status = 'running', claimed_at = now(), last_active_at = now()
            WHERE id = (
                SELECT id FROM sandboxes WHERE status = 'warm' AND backend = $2 AND image = $3
                ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1
            )
            RETURNING \(Self.columns)
            """,
            [.uuid(conversation), .text(backend.rawValue), .text(image)]
        ).first.map(SandboxRecord.init)
    }

    /// What ``insertStarting(id:backend:image:sessionAPIKey:conversation:worker:lease:)`` did.
    public enum InsertOutcome: Sendable {
        case inserted(SandboxRecord)
        /// The conversation already has a live sandbox (another provision got there first).
        case conversationTaken
    }

    /// Inserts a sandbox in `starting`, leased to `worker`.

    public func insertStarting(
        id: UUID,
        backend: RuntimeSettings.Backend,
        image: String,
        sessionAPIKey: String,
        conversation: UUID?,
        worker: String,
        lease: Duration
    ) async throws -> InsertOutcome {
        do {
            let rows = try await postgres.query(
                """
                INSERT INTO sandboxes (id, backend, image, status, session_api_key, conversation_id, worker_id,
                    lease_until, claimed_at, node)
                VALUES ($1, $2, $3, 'starting', $4, $5, $6, now() + $7::float8 * interval '1 millisecond',
                    CASE WHEN $5::uuid IS NULL THEN NULL ELSE now() END, $8)
                RETURNING \(Self.columns)
                """,
                [
                    .uuid(id), .text(backend.rawValue), .text(image), .text(sessionAPIKey),
                    .optional(conversation.map { .uuid($0) }), .text(worker), .int(lease.wholeMilliseconds),
                    .text(node),
                ]
            )
            guard let row = rows.first else { throw DeckhandError(.internalError, "INSERT … RETURNING gave no row") }
            return .inserted(try SandboxRecord(row: row))
        } catch let error as DeckhandError where error.postgresSQLState == "23505" {
            return .conversationTaken
        }
    }

    /// Extends `worker`'s lease; false when the row is no longer leased to it.
    public func renewLease(id: UUID, worker: String, lease: Duration) async throws -> Bool {
        try await postgres.execute(
            "UPDATE sandboxes SET lease_until = now() + $3::float8 * interval '1 millisecond' WHERE id = $1 AND worker_id = $2",
            [.uuid(id), .text(worker), .int(lease.wholeMilliseconds)]
        ) == 1
    }

    /// Takes over a `starting` sandbox whose lease ran out (its worker died) for this node, where it is started
    /// now; false when the lease still holds.
    public func takeOver(id: UUID, worker: String, lease: Duration) async throws -> Bool {
        try await postgres.execute(
            """
            UPDATE sandboxes SET worker_id = $2, lease_until = now() + $3::float8 * interval '1 millisecond', node = $4
            WHERE id = $1 AND status = 'starting' AND (lease_until IS NULL OR lease_until < now())
            """,
            [.uuid(id), .text(worker), .int(lease.wholeMilliseconds), .text(node)]
        ) == 1
    }

    /// Records the backend's reference as soon as it exists, so cleanup can find it.
    public func setReference(id: UUID, reference: String) async throws {
        try await postgres.execute(
            "UPDATE sandboxes SET backend_ref = $2 WHERE id = $1",
            [.uuid(id), .text(reference)]
        )
    }

    /// Ends a provision: `starting` → `status` (warm or running) with its URL, if `worker` still holds it.
    public func finishStarting(
        id: UUID,
        worker: String,
        status: SandboxRecord.Status,
        url: String
    ) async throws
        -> SandboxRecord?
    {
        try await postgres.query(
            """
            UPDATE sandboxes SET status = $3, url = $4, worker_id = NULL, lease_until = NULL, last_active_at = now()
            WHERE id = $1 AND worker_id = $2 AND status = 'starting'
            RETURNING \(Self.columns)
            """,
            [.uuid(id), .text(worker), .text(status.rawValue), .text(url)]
        ).first.map(SandboxRecord.init)
    }

    /// Sets a new status (and URL, when it changed), clearing any lease.
    public func setStatus(
        id: UUID,
        _ status: SandboxRecord.Status,
        url: String? = nil,
        reason: String? = nil
    )
        async throws
    {
        try await postgres.execute(
            """
            UPDATE sandboxes SET status = $2, url = COALESCE($3, url), reason = COALESCE($4, reason),
                worker_id = NULL, lease_until = NULL
            WHERE id = $1
            """,
            [.uuid(id), .text(status.rawValue), .optional(url.map { .text($0) }), .optional(reason.map { .text($0) })]
        )
    }

    /// Marks the sandbox used now (resets its idle timers).
    public func touch(id: UUID) async throws {
        try await postgres.execute("UPDATE sandboxes SET last_active_at = now() WHERE id = $1", [.uuid(id)])
    }

    /// Records that the sandbox was last used `idle` ago, by its own account (its server's `idle_time`); a later
    /// use already recorded is kept.
    public func touch(id: UUID, idleFor idle: Duration) async throws {
        try await postgres.execute(
            """
            UPDATE sandboxes SET last_active_at = greatest(last_active_at, now() - $2::float8 * interval '1 millisecond')
            WHERE id = $1
            """,
            [.uuid(id), .int(idle.wholeMilliseconds)]
        )
    }

    /// Records the key the sandbox's server demands (a Runtime API chose it).
    public func setSessionKey(id: UUID, _ key: String) async throws {
        try await postgres.execute("UPDATE sandboxes SET session_api_key = $2 WHERE id = $1", [.uuid(id), .text(key)])
    }

    public func delete(id: UUID) async throws {
        try await postgres.execute("DELETE FROM sandboxes WHERE id = $1", [.uuid(id)])
    }

    // MARK: Warm pool

    /// Under a transaction advisory lock per pool and node (so concurrent refills never overshoot): counts this
    /// node's warm sandboxes of the pool and those starting for it, and inserts `starting` rows for the
    /// shortfall, leased to `worker`. Returns the new rows.
    ///
    /// The pool is per node: `runtime.warm_pool` says what each node keeps warm, so a pool grows with the
    /// nodes that carry it, no node starts another's share, and a node that dies takes only its own warm
    /// sandboxes with it. Any node's warm sandbox may be handed to any conversation (its URL is reachable).
    public func reserveWarm(
        target: RuntimeSettings.PoolTarget,
        worker: String,
        lease: Duration,
        makeKey: @escaping @Sendable () -> String
    ) async throws -> [SandboxRecord] {
        let key = lockKey("pool:\(node):\(target.backend.rawValue):\(target.image)")
        return try await postgres.transaction { connection in
            _ = try connection.execute("SELECT pg_advisory_xact_lock($1)", [.int(key)])
            let count =
                try connection.query(
                    """
                    SELECT count(*) AS n FROM sandboxes
                    WHERE backend = $1 AND image = $2 AND node = $3 AND conversation_id IS NULL
                      AND (status = 'warm' OR (status = 'starting' AND lease_until > now()))
                    """,
                    [.text(target.backend.rawValue), .text(target.image), .text(node)]
                ).first?.decode(Int.self, "n") ?? 0
            var reserved: [SandboxRecord] = []
            for _ in 0..<max(0, target.size - count) {
                let rows = try connection.query(
                    """
                    INSERT INTO sandboxes (id, backend, image, status, session_api_key, worker_id, lease_until, node)
                    VALUES ($1, $2, $3, 'starting', $4, $5, now() + $6::float8 * interval '1 millisecond', $7)
                    RETURNING \(Self.columns)
                    """,
                    [
                        .uuid(UUID()), .text(target.backend.rawValue), .text(target.image), .text(makeKey()),
                        .text(worker), .int(lease.wholeMilliseconds), .text(node),
                    ]
                )
                if let row = rows.first { reserved.append(try SandboxRecord(row: row)) }
            }
            return reserved
        }
    }

    // MARK: Maintenance

    /// Under this node's maintenance lock, if no other worker holds it: the node's sandboxes due for an idle
    /// action (pause, stop, destroy) and its abandoned warm starts, each leased to `worker` so no one else acts
    /// on them meanwhile. Nil when another worker of the node is doing the maintenance.
    public func claimMaintenance(
        worker: String,
        lease: Duration,
        pauseAfter: Duration,
        stopAfter: Duration,
        destroyAfter: Duration
    ) async throws -> [SandboxRecord]? {
        let key = lockKey("maintenance:\(node)")
        return try await postgres.transaction { connection -> [SandboxRecord]? in
            guard try connection.tryAdvisoryTransactionLock(key: key) else { return nil }
            func due(_ after: Duration) -> PostgresValue { after > .zero ? .int(after.wholeMilliseconds) : .null }
            let rows = try connection.query(
                """
                WITH due AS (
                    SELECT id FROM sandboxes
                    WHERE node = $6 AND (lease_until IS NULL OR lease_until < now()) AND (
                        (status = 'running' AND conversation_id IS NOT NULL
                            AND last_active_at < now() - $1::float8 * interval '1 millisecond')
                        OR (status IN ('running', 'paused') AND conversation_id IS NOT NULL
                            AND last_active_at < now() - $2::float8 * interval '1 millisecond')
                        OR (status IN ('running', 'paused', 'stopped') AND conversation_id IS NOT NULL
                            AND last_active_at < now() - $3::float8 * interval '1 millisecond')
                        OR (status = 'starting' AND conversation_id IS NULL AND lease_until < now())
                    )
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE sandboxes SET worker_id = $4, lease_until = now() + $5::float8 * interval '1 millisecond'
                FROM due WHERE sandboxes.id = due.id
                RETURNING \(Self.columns.split(separator: ",").map { "sandboxes." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", "))
                """,
                [
                    due(pauseAfter), due(stopAfter), due(destroyAfter), .text(worker), .int(lease.wholeMilliseconds),
                    .text(node),
                ]
            )
            _ = try connection.execute("DELETE FROM processed_messages WHERE processed_at < now() - interval '7 days'")
            return try rows.map(SandboxRecord.init)
        }
    }

    // MARK: Node leases

    /// Renews this node's lease for `lease` (recording the address its sandboxes are published on); true when
    /// the node had been taken for dead meanwhile (its sandboxes given up on: the caller removes what it still
    /// runs of them).
    public func renewNode(lease: Duration, advertiseHost: String) async throws -> Bool {
        // Two statements under the row's lock: a CTE that reads `swept_at` beside the upsert that clears it sees
        // the row as the upsert left it (so it always said "not swept", and a healed node never cleaned up).
        try await postgres.transaction { connection -> Bool in
            let swept =
                try connection.query(
                    "SELECT swept_at IS NOT NULL AS swept FROM nodes WHERE id = $1 FOR UPDATE",
                    [.text(node)]
                ).first?.decode(Bool.self, "swept") ?? false
            _ = try connection.execute(
                """
                INSERT INTO nodes (id, lease_until, advertise_host)
                VALUES ($1, now() + $2::float8 * interval '1 millisecond', $3)
                ON CONFLICT (id) DO UPDATE
                    SET lease_until = EXCLUDED.lease_until, advertise_host = EXCLUDED.advertise_host, swept_at = NULL
                """,
                [.text(node), .int(lease.wholeMilliseconds), .text(advertiseHost)]
            )
            return swept
        }
    }

    /// How long node `node`'s lease still runs, by the database's clock (zero when it ran out; nil when the node
    /// never renewed one).
    public func leaseRemaining(node: String) async throws -> Duration? {
        let rows = try await postgres.query(
            "SELECT greatest(0, extract(epoch FROM lease_until - now()) * 1000)::float8 AS ms FROM nodes WHERE id = $1",
            [.text(node)]
        )
        return try rows.first.map { .milliseconds(Int64(try $0.decode(Double.self, "ms"))) }
    }

    /// Takes every other node whose lease ran out for dead (each once, by whichever worker gets to it first):
    /// marks its live sandboxes lost, saying why. Returns them.
    public func sweepLapsedNodes() async throws -> [SandboxRecord] {
        try await postgres.transaction { connection -> [SandboxRecord] in
            let lapsed = try connection.query(
                """
                SELECT id FROM nodes WHERE lease_until < now() AND swept_at IS NULL AND id <> $1
                FOR UPDATE SKIP LOCKED
                """,
                [.text(node)]
            ).map { try $0.decode(String.self, "id") }
            var given: [SandboxRecord] = []
            for dead in lapsed {
                given += try connection.query(
                    """
                    UPDATE sandboxes SET status = 'lost', worker_id = NULL, lease_until = NULL,
                        reason = 'its node ' || node || ' stopped renewing its lease (taken for dead)'
                    WHERE node = $1 AND status NOT IN \(Self.dead)
                    RETURNING \(Self.columns)
                    """,
                    [.text(dead)]
                ).map(SandboxRecord.init)
                _ = try connection.execute("UPDATE nodes SET swept_at = now() WHERE id = $1", [.text(dead)])
            }
            return given
        }
    }

    // MARK: Processed messages

    public func isProcessed(consumer: String, messageID: String) async throws -> Bool {
        !(try await postgres.query(
            "SELECT 1 FROM processed_messages WHERE consumer = $1 AND message_id = $2",
            [.text(consumer), .text(messageID)]
        ).isEmpty)
    }

    public func markProcessed(consumer: String, messageID: String) async throws {
        try await postgres.execute(
            "INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [.text(consumer), .text(messageID)]
        )
    }
}
