import AMQP
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import RuntimeManager
import Testing

/// The runtime workers under load: 110 process sandboxes start within seconds, which saturates a 2-core
/// machine. scripts/test.sh runs this suite on its own, after the others, so that load does not distort the
/// tests that measure soft timeouts and deadlines.
@Suite struct RuntimeLoadTests {
    @Test func twoWorkersServeAHundredConcurrentProvisionsFromAPoolOfTen() async throws {
        try await TestRuntime.with { runtime in
            let settings = TestRuntime.settings {
                $0.warmPool = [.init(backend: .process, image: RuntimeSettings.processImage, size: 10)]
            }
            // Two workers as two processes would be: each with its own connection.
            let firstConnection = try await TestAMQP.connect(name: runtime.namespace + "-first")
            let secondConnection = try await TestAMQP.connect(name: runtime.namespace + "-second")
            defer {
                Task {
                    await firstConnection.close()
                    await secondConnection.close()
                }
            }
            let first = try runtime.makeWorker(settings: settings, prefetch: 16, connection: firstConnection)
            let second = try runtime.makeWorker(settings: settings, prefetch: 16, connection: secondConnection)
            try await running(first, second) {
                try await eventually("the pool holds 10 warm sandboxes") {
                    try await runtime.store.all().filter { $0.status == .warm }.count == 10
                }
                let warm = Set(try await runtime.store.all().map(\.id))
                let conversations = (0..<100).map { _ in UUID() }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for conversation in conversations {
                        group.addTask { try await runtime.provision(conversation) }
                    }
                    try await group.waitForAll()
                }
                var handedOut: [UUID: UUID] = [:]
                for conversation in conversations {
                    let reply = try await runtime.reply(for: conversation, timeout: .seconds(120))
                    let ready = try #require(reply.ready, "\(reply)")
                    #expect(handedOut[ready.sandboxID] == nil, "sandbox \(ready.sandboxID) handed out twice")
                    handedOut[ready.sandboxID] = conversation
                }
                #expect(handedOut.count == 100)
                #expect(Set(handedOut.keys).intersection(warm).count == 10, "all 10 warm sandboxes were claimed")
                let rows = try await runtime.store.all().filter { $0.conversationID != nil }
                #expect(rows.count == 100)
                #expect(Set(rows.compactMap(\.conversationID)) == Set(conversations))
                #expect(try runtime.allReplies().values.allSatisfy { $0.count == 1 }, "one answer per conversation")
            }
        }
    }
}
