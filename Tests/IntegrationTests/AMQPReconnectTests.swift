import AMQP
import DeckhandCore
import DeckhandTesting
import Foundation
import Synchronization
import Testing

@Suite struct AMQPReconnectTests {
    /// DESIGN §2's promise under faults: every message the broker confirmed is consumed at least once, while
    /// the broker forcibly closes both connections twice in the middle of the run.
    @Test func confirmedMessagesSurviveForcedConnectionCloses() async throws {
        let name = TestEnvironment.uniqueName("reconnect")
        let publisher = try await TestAMQP.connect(name: name + "-pub")
        let consumerConnection = try await TestAMQP.connect(name: name + "-con")
        try await publisher.declare(AMQPQueue(name: name, kind: .quorum))

        let tasks = 50
        let perTask = 200
        let total = tasks * perTask
        let tally = Tally()

        let consumer = try await consumerConnection.consume(queue: name, prefetch: 500)
        let consuming = Task {
            for try await delivery in consumer {
                let id = delivery.properties.messageID ?? ""
                tally.consumed.withLock { state in
                    if !state.unique.insert(id).inserted { state.duplicates += 1 }
                }
                delivery.ack()
            }
        }

        let faults = Task {
            var closed = 0
            var confirmedAtCloses: [Int] = []
            for threshold in [total / 5, total / 2] {
                while tally.confirmed.withLock({ $0.count }) < threshold { try await Task.sleep(for: .milliseconds(5)) }
                closed += try await TestAMQP.closeConnections(named: name)
                confirmedAtCloses.append(tally.confirmed.withLock { $0.count })
            }
            tally.faultsDone.store(true, ordering: .releasing)
            return (closed, confirmedAtCloses)
        }

        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<tasks {
                group.addTask {
                    for index in 0..<perTask {
                        let body = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: 1024)
                        let message = AMQPMessage(json: body, type: "test", messageID: "\(task)-\(index)")
                        // Paced (~3,000 messages/s in all), and the last tenth held back until both faults are
                        // done, so that the broker closes the connections in the middle of the run.
                        try await Task.sleep(for: .milliseconds(10))
                        while index >= perTask * 9 / 10, !tally.faultsDone.load(ordering: .acquiring) {
                            try await Task.sleep(for: .milliseconds(5))
                        }
                        do {
                            try await publisher.publish(message, exchange: "", routingKey: name)
                            _ = tally.confirmed.withLock { $0.insert("\(task)-\(index)") }
                        } catch {
                            tally.failed.add(1, ordering: .relaxed)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let (closedConnections, confirmedAtCloses) = try await faults.value

        let confirmedIDs = tally.confirmed.withLock { $0 }
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let missing = tally.consumed.withLock { confirmedIDs.subtracting($0.unique).count }
            if missing == 0 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        await consumer.cancel()
        consuming.cancel()
        let (unique, duplicates) = tally.consumed.withLock { ($0.unique, $0.duplicates) }
        let lost = confirmedIDs.subtracting(unique).count
        print(
            "AMQP reconnect: published \(total), confirmed \(confirmedIDs.count), failed \(tally.failed.load(ordering: .relaxed)), "
                + "consumed \(unique.count) unique + \(duplicates) duplicates, lost \(lost), "
                + "connections closed by the broker \(closedConnections) (at \(confirmedAtCloses) confirmed), publisher connected \(publisher.status.connections) times"
        )
        #expect(closedConnections >= 4, "both connections were closed twice")
        #expect(confirmedAtCloses.allSatisfy { $0 < total }, "the closes happened while messages were being published")
        #expect(publisher.status.connections >= 3, "the publisher reconnected after each close")
        #expect(confirmedIDs.count == total, "every publish was confirmed in the end")
        #expect(lost == 0)

        try await publisher.deleteQueue(name)
        await consumerConnection.close()
        await publisher.close()
    }
}

private final class Tally: Sendable {
    let confirmed = Mutex(Set<String>())
    let failed = Atomic<Int>(0)
    let faultsDone = Atomic<Bool>(false)
    let consumed = Mutex((unique: Set<String>(), duplicates: 0))
}
