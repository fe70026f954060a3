import DeckhandCore
import Testing

@testable import Postgres

/// What a connection is told beyond its URL: libpq keywords for keepalives, SET statements for the limits.
@Suite struct PostgresSessionSettingsTests {
    @Test func keepalivesProbeThreeTimesAThirdOfTheIdleTimeApart() {
        let keywords = Dictionary(uniqueKeysWithValues: PostgresSessionSettings().connectionKeywords)
        #expect(keywords["keepalives"] == "1")
        #expect(keywords["keepalives_idle"] == "30")
        #expect(keywords["keepalives_interval"] == "10")
        #expect(keywords["keepalives_count"] == "3")
        #expect(keywords["tcp_user_timeout"] == "60000")
        let off = PostgresSessionSettings(keepalivesIdle: nil).connectionKeywords
        #expect(off.count == 1 && off[0] == ("keepalives", "0"))
    }

    @Test func limitsAreMillisecondsAndOffIsZero() {
        let settings = PostgresSessionSettings(
            keepalivesIdle: nil,
            statementTimeout: .milliseconds(1500),
            idleInTransactionTimeout: nil
        )
        #expect(
            settings.sessionStatements == "SET statement_timeout = 1500; SET idle_in_transaction_session_timeout = 0"
        )
    }

    @Test func theServerProbesItsSideOfTheConnectionToo() {
        let statements = PostgresSessionSettings(keepalivesIdle: .seconds(30)).sessionStatements
            .split(separator: "; ").map(String.init)
        #expect(statements.contains("SET tcp_keepalives_idle = 30"))
        #expect(statements.contains("SET tcp_keepalives_interval = 10"))
        #expect(statements.contains("SET tcp_keepalives_count = 3"))
        #expect(statements.contains("SET tcp_user_timeout = 60000"))
    }
}
