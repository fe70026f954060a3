import AMQP
import DeckhandCore
import DeckhandStore
import HTTPTypes
import Hummingbird
import Postgres
import Testing

@testable import Gateway

/// What a client is told for each kind of failure (`APIError`), without I/O.
@Suite struct APIErrorTests {
    @Test func failuresThatPassByThemselvesAskForARetry() {
        for code in [
            DeckhandError.Code.unavailable, .postgresPoolTimeout, .postgresClosed, .amqpRefused, .amqpNacked,
            .amqpUnroutable, .amqpClosed,
        ] {
            let answer = APIError(DeckhandError(code, "password=hunter2 somewhere inside"), retryAfter: 3)
            #expect(answer.status == .serviceUnavailable, "\(code)")
            #expect(answer.retryAfter == 3, "\(code)")
            #expect(answer.code == "SERVICE$UNAVAILABLE")
            #expect(!answer.message.contains("hunter2"), "the cause stays in the logs")
        }
        let fault = APIError(DeckhandError(.postgresQuery, "syntax error"), retryAfter: 3)
        #expect(fault.status == .internalServerError && fault.retryAfter == nil)
        #expect(APIError(DeckhandError(.conversationNotFound, "x"), retryAfter: 3).code == "CONVERSATION$NOT_FOUND")
    }

    @Test func aMethodARouteDoesNotHaveIsA405NamingTheOthers() {
        #expect(OpenAPIDocument.methods(of: "/api/conversations") == ["GET", "POST"])
        #expect(OpenAPIDocument.methods(of: "/api/conversations/0b1c/start") == ["POST"])
        #expect(OpenAPIDocument.methods(of: "/health") == ["GET"])
        #expect(OpenAPIDocument.methods(of: "/api/conversations//start").isEmpty, "a segment is never empty")
        #expect(OpenAPIDocument.methods(of: "/nothing").isEmpty)
        let answer = APIError.methodNotAllowed("PUT", allow: ["GET", "POST"])
        #expect(answer.status == .methodNotAllowed)
        #expect(answer.response.headers[.allow] == "GET, POST")
    }
}
