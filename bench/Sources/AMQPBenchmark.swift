import AMQP
import DeckhandCore
import DeckhandTesting
import Foundation
import Synchronization

/// Publish and consume rates of the AMQP module against the local broker (CLIBS.md's conditions: 1 KiB
/// persistent messages, a quorum queue, loopback).
enum AMQPBenchmark {
    static func run(messages: Int, publishers: Int, prefetch: Int) async throws -> [BenchmarkResult] {
        let name = TestEnvironment.uniqueName("bench")
        let publisher = try await TestAMQP.connect(name: name + "-pub")
        let consumerConnection = try await TestAMQP.connect(name: name + "-con")
        try await publisher.declare(AMQPQueue(name: name, kind: .quorum))
        defer { Task { try? await publisher.deleteQueue(name) } }
        let body = [UInt8](repeating: 0x61, count: 1024)

        // Publish, waiting for each confirm before the next: latency-bound.
        let serialCount = min(2000, messages)
        let serialStart = ContinuousClock.now
        for index in 0..<serialCount {
            try await publisher.publish(AMQPMessage(json: body, messageID: "s\(index)"), exchange: "", routingKey: name)
        }
        let serialRate = Double(serialCount) / (ContinuousClock.now - serialStart).seconds

        // Publish from many tasks, up to the confirm window in flight.
        let next = Counter()
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<publishers {
                group.addTask {
                    while true {
                        let index = next.value.wrappingAdd(1, ordering: .relaxed).oldValue
                        if index >= messages { return }
                        try await publisher.publish(
                            AMQPMessage(json: body, messageID: "p\(index)"),
                            exchange: "",
                            routingKey: name
                        )
                    }
                }
            }
            try await group.waitForAll()
        }
        let publishRate = Double(messages) / (ContinuousClock.now - start).seconds

        // Consume everything with acks (coalesced into multiple=true by the connection thread).
        let total = messages + serialCount
        let consumeStart = ContinuousClock.now
        let consumer = try await consumerConnection.consume(queue: name, prefetch: prefetch)
        var received = 0
        for try await delivery in consumer {
            delivery.ack()
            received += 1
            if received == total { break }
        }
        let consumeRate = Double(received) / (ContinuousClock.now - consumeStart).seconds
        await consumer.cancel()
        await consumerConnection.close()
        await publisher.close()
        return [
            BenchmarkResult(name: "amqp.publish.confirm_each", value: serialRate, unit: "msg/s", target: 1_200),
            BenchmarkResult(
                name: "amqp.publish.\(publishers)_tasks",
                value: publishRate,
                unit: "msg/s",
                target: 15_000
            ),
            BenchmarkResult(
                name: "amqp.consume.prefetch_\(prefetch)",
                value: consumeRate,
                unit: "msg/s",
                target: 38_000
            ),
        ]
    }
}

/// A counter tasks share.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
