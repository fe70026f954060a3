import DeckhandCore
import Foundation
import Postgres

/// `stream_connections`: the live-stream clients each gateway serves per conversation (migration 0006).
public struct StreamCensusStore: Sendable {
    public let postgres: PostgresClient
    /// A gateway's rows older than this are a dead gateway's: ignored by readers, deleted by refreshes.
    public static let staleAfter = 30

    public init(postgres: PostgresClient) {
        self.postgres = postgres
    }

    /// Writes `gateway`'s counts: conversations with clients get their count (and a fresh `seen_at`), the
    /// others in `gone` lose their row. One transaction.
    public func write(gateway: String, counts: [UUID: Int], gone: [UUID]) async throws {
        let live = counts.filter { $0.value > 0 }
        guard !live.isEmpty || !gone.isEmpty else { return }
        let ids = JSONValue.array(live.keys.map { .string($0.uuidString) }).serialized
        let numbers = JSONValue.array(live.keys.map { .number(Double(live[$0] ?? 0)) }).serialized
        let removed = JSONValue.array(gone.map { .string($0.uuidString) }).serialized
        try await postgres.transaction { connection in
            if !gone.isEmpty {
                try connection.execute(
                    """
                    DELETE FROM stream_connections
                    WHERE gateway = $1 AND conversation_id IN (SELECT value::uuid FROM jsonb_array_elements_text($2::jsonb))
                    """,
                    [.text(gateway), .jsonb(removed)]
                )
            }
            if !live.isEmpty {
                try connection.execute(
                    """
                    INSERT INTO stream_connections (gateway, conversation_id, connections, seen_at)
                    SELECT $1, i.value::uuid, n.value::int, now()
                    FROM jsonb_array_elements_text($2::jsonb) WITH ORDINALITY AS i(value, position)
                    JOIN jsonb_array_elements_text($3::jsonb) WITH ORDINALITY AS n(value, position) USING (position)
                    ON CONFLICT (conversation_id, gateway)
                    DO UPDATE SET connections = excluded.connections, seen_at = excluded.seen_at
                    """,
                    [.text(gateway), .jsonb(ids), .jsonb(numbers)]
                )
            }
        }
    }

    /// Marks every row of `gateway` as seen now, and deletes the rows of gateways not seen for
    /// ``staleAfter`` seconds.
    public func refresh(gateway: String) async throws {
        try await postgres.transaction { connection in
            try connection.execute("UPDATE stream_connections SET seen_at = now() WHERE gateway = $1", [.text(gateway)])
            try connection.execute(
                "DELETE FROM stream_connections WHERE seen_at < now() - make_interval(secs => $1)",
                [.int(Int64(Self.staleAfter))]
            )
        }
    }

    /// Deletes `gateway`'s rows (it stops).
    public func remove(gateway: String) async throws {
        try await postgres.execute("DELETE FROM stream_connections WHERE gateway = $1", [.text(gateway)])
    }

    /// The clients of `conversation` on live gateways other than `gateway`.
    public func others(of conversation: UUID, except gateway: String) async throws -> Int {
        try await postgres.query(
            """
            SELECT coalesce(sum(connections), 0)::bigint AS connections FROM stream_connections
            WHERE conversation_id = $1 AND gateway <> $2 AND seen_at > now() - make_interval(secs => $3)
            """,
            [.uuid(conversation), .text(gateway), .int(Int64(Self.staleAfter))]
        ).first?.decode(Int.self, "connections") ?? 0
    }

    /// `others(of:except:)` as a column `other_connections` of a select over `conversations` aliased `alias`,
    /// binding the gateway as `$<parameter>`.
    public static func othersColumn(conversation alias: String, gateway parameter: Int) -> String {
        """
        (SELECT coalesce(sum(s.connections), 0)::bigint FROM stream_connections s
         WHERE s.conversation_id = \(alias).id AND s.gateway <> $\(parameter)
           AND s.seen_at > now() - interval '\(staleAfter) seconds') AS other_connections
        """
    }
}
