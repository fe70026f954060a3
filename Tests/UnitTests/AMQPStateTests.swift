import DeckhandCore
import Foundation
import Testing

@testable import AMQP

@Suite struct AckCoalescerTests {
    @Test func aContiguousRunOfAcksBecomesOneMultipleAck() {
        var coalescer = AckCoalescer()
        for tag in 1...5 { coalescer.delivered(UInt64(tag)) }
        for tag in [3, 1, 2] { coalescer.settle(UInt64(tag), .ack) }
        #expect(coalescer.flush() == [.ack(tag: 3, multiple: true)])
        #expect(coalescer.outstandingCount == 2)
        coalescer.settle(5, .ack)
        // 4 is still outstanding, so 5 cannot be covered by a multiple ack.
        #expect(coalescer.flush() == [.ack(tag: 5, multiple: false)])
        coalescer.settle(4, .ack)
        #expect(coalescer.flush() == [.ack(tag: 4, multiple: false)])
        #expect(coalescer.outstandingCount == 0)
    }

    @Test func nacksGoFirstSoAMultipleAckNeverCoversThem() {
        var coalescer = AckCoalescer()
        for tag in 1...4 { coalescer.delivered(UInt64(tag)) }
        coalescer.settle(1, .ack)
        coalescer.settle(3, .ack)
        coalescer.settle(2, .nack(requeue: true))
        coalescer.settle(4, .reject(requeue: false))
        #expect(
            coalescer.flush() == [
                .nack(tag: 2, requeue: true), .reject(tag: 4, requeue: false), .ack(tag: 3, multiple: true),
            ]
        )
        #expect(coalescer.outstandingCount == 0)
    }

    @Test func settlingAnUnknownTagIsIgnored() {
        var coalescer = AckCoalescer()
        coalescer.delivered(7)
        coalescer.settle(8, .nack(requeue: true))
        #expect(coalescer.flush().isEmpty)
        coalescer.reset()
        coalescer.settle(7, .ack)
        #expect(coalescer.flush().isEmpty)
    }
}

@Suite struct ConfirmTrackerTests {
    @Test func multipleAcksSettleEverythingUpToTheTag() {
        var tracker = ConfirmTracker<String>()
        for name in ["a", "b", "c", "d"] { tracker.published(messageID: name, payload: name) }
        let settled = tracker.ack(3, multiple: true)
        #expect(settled.map(\.0) == ["a", "b", "c"])
        #expect(settled.allSatisfy { $0.1 == .confirmed })
        #expect(tracker.inFlight == 1)
        #expect(tracker.nack(4, multiple: false).map(\.1) == [.nacked])
    }

    @Test func aReturnedMessageFailsWhenItsConfirmArrives() {
        var tracker = ConfirmTracker<String>()
        tracker.published(messageID: "m1", payload: "one")
        tracker.published(messageID: "m2", payload: "two")
        tracker.returned(messageID: "m2", reason: "312 NO_ROUTE")
        let settled = tracker.ack(2, multiple: false)
        #expect(settled.count == 1)
        #expect(settled[0].0 == "two")
        #expect(settled[0].1 == .returned("312 NO_ROUTE"))
        #expect(tracker.ack(1, multiple: false).map(\.1) == [.confirmed])
    }

    @Test func resetHandsBackUnconfirmedInOrderAndRestartsNumbering() {
        var tracker = ConfirmTracker<Int>()
        for value in 1...5 { tracker.published(messageID: nil, payload: value) }
        _ = tracker.ack(2, multiple: false)
        #expect(tracker.reset() == [1, 3, 4, 5])
        #expect(tracker.nextSequence == 1)
        #expect(tracker.published(messageID: nil, payload: 9) == 1)
        // An ack for a tag of the old channel that no longer exists settles nothing.
        #expect(tracker.ack(5, multiple: false).isEmpty)
    }
}

@Suite struct BackoffTests {
    @Test func delaysDoubleWithJitterUpToTheMaximum() {
        var backoff = Backoff(minimum: .milliseconds(100), maximum: .seconds(1))
        var generator = SystemRandomNumberGenerator()
        let ceilings: [Duration] = [
            .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1),
        ]
        for ceiling in ceilings {
            let delay = backoff.next(using: &generator)
            #expect(delay <= ceiling)
            #expect(delay >= ceiling / 2)
        }
        backoff.reset()
        #expect(backoff.next(using: &generator) <= .milliseconds(100))
    }
}

@Suite struct FieldTableTests {
    @Test func tablesSurviveTheTripThroughC() {
        let table: AMQPTable = [
            "string": "text", "int": 42, "bool": true, "double": .double(1.5), "bytes": .bytes([0, 1, 255]),
            "timestamp": .timestamp(Date(timeIntervalSince1970: 1_700_000_000)),
            "nested": .table(["inner": .array(["a", 1, .void])]),
        ]
        let arena = CArena()
        #expect(decodeTable(arena.table(table)) == table)
    }

    @Test func propertiesSurviveTheTripThroughC() {
        let properties = AMQPProperties(
            contentType: "application/json",
            messageID: "id-1",
            correlationID: "c-1",
            type: "step",
            timestamp: Date(timeIntervalSince1970: 1_700_000_000),
            replyTo: "amq.rabbitmq.reply-to",
            persistent: true,
            expiration: "5000",
            headers: ["x-attempt": 3]
        )
        let arena = CArena()
        #expect(decodeProperties(arena.properties(properties)) == properties)
        let transient = AMQPProperties(persistent: false)
        #expect(decodeProperties(arena.properties(transient)) == transient)
    }

    @Test func quorumQueueArgumentsAreDerivedFromTheDeclaration() {
        let queue = AMQPQueue(
            name: "conversation.commands",
            deadLetterExchange: "deckhand.dead",
            deliveryLimit: 5,
            messageTTLMilliseconds: 1000
        )
        #expect(
            queue.declarationArguments == [
                "x-queue-type": "quorum", "x-dead-letter-exchange": "deckhand.dead", "x-delivery-limit": 5,
                "x-message-ttl": 1000,
            ]
        )
    }
}
