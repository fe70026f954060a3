import DeckhandCore
import Foundation
import Postgres
import Testing

@testable import AMQP

/// What an error shows of the error underneath it: never data it may quote.
@Suite struct DeckhandErrorTests {
    struct QuotingError: Error, CustomStringConvertible {
        var description: String { "the row (api_key)=(sk-secret) already exists" }
    }

    @Test func aServerErrorShowsItsStateAndMessageButNotItsDetail() {
        let server = PostgresServerError(
            sqlState: "23505",
            message: "duplicate key value violates unique constraint \"api_keys_hash\"",
            detail: "Key (hash)=(sk-secret) already exists.",
            constraint: "api_keys_hash"
        )
        let error = DeckhandError(.postgresQuery, "the insert failed", underlying: server)
        #expect(!error.description.contains("sk-secret"))
        #expect(error.description.contains("23505"))
        #expect(error.description.contains("constraint api_keys_hash"))
        #expect(error.debugDescription.contains("sk-secret"), "a debugger still sees everything")
    }

    @Test func anUnknownUnderlyingErrorShowsOnlyItsTypeName() {
        let error = DeckhandError(.internalError, "it failed", underlying: QuotingError())
        #expect(error.description == "INTERNAL$ERROR: it failed (QuotingError)")
        #expect("\(error)" == error.description, "string interpolation, as logs use, is the redacted form")
        #expect(error.debugDescription.contains("sk-secret"))
    }

    @Test func nestedErrorsAndBrokerRefusalsKeepTheirOwnWords() {
        let refusal = AMQPRefusal(replyCode: 404, replyText: "NOT_FOUND - no queue 'q'")
        let inner = DeckhandError(.unavailable, "the broker refused", underlying: refusal)
        let outer = DeckhandError(.internalError, "cannot publish", underlying: inner)
        #expect(
            outer.description
                == "INTERNAL$ERROR: cannot publish (SERVICE$UNAVAILABLE: the broker refused (AMQP 404 NOT_FOUND - no queue 'q'))"
        )
        #expect(DeckhandError(.timeout, "slow").description == "SERVICE$TIMEOUT: slow")
    }
}
