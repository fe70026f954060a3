import AMQP
import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import HTTPClient
import Messaging
import Testing

/// A RabbitMQ resource alarm while conversations run. The alarm is the broker's, not this test's: the suite
/// runs alone (`scripts/test.sh` gives it a phase of its own), and it always clears the alarm.
@Suite(.serialized) struct BrokerAlarmTests {
    /// Roles publish and consume on separate connections: under a memory alarm the broker blocks the
    /// publishing ones only, the consuming ones go on; the gateway answers a command with 503 and
    /// `Retry-After` instead of hanging; once the alarm clears, every conversation finishes and the live
    /// feed has delivered every event.
    @Test func aMemoryAlarmBlocksOnlyPublishingAndEverythingGoesOnAfterIt() async throws {
        try await TestConversations.with { bed in
            let name = TestEnvironment.uniqueName("alarm")
            let publishing = try await TestAMQP.connect(name: "\(name)-publish") { $0.publishTimeout = .seconds(3) }
            let consuming = try await TestAMQP.connect(name: "\(name)-consume")
            let bus = CommandBus(connection: publishing, consuming: consuming, topology: bed.runtime.topology)
            let worker = bed.makeWorker(connection: publishing, consuming: consuming)
            let runtime = try bed.runtime.makeWorker(connection: publishing, consuming: consuming)
            try await running(runtime, worker) {
                try await bed.withGateway(bus: bus) { gateway in
                    let steps = (0..<8).map { index in
                        var step = FakeLLM.Step.bash("echo step-\(index) >> alarm.log")
                        step.latencyMilliseconds = 300
                        return step
                    }
                    let models = (0..<3).map { _ in bed.scripted(steps + [.finish("Done.")]) }
                    var ids: [String] = []
                    for model in models { ids.append(try await gateway.createConversation("Go.", model: model)) }
                    let watched = ids[0]
                    let feed = Task {
                        try await gateway.serverSentEvents(watched, timeout: .seconds(180)) { seen in
                            seen.events.contains { $0["extras"]?["agent_state"]?.stringValue == "finished" }
                        }
                    }
                    try await eventually("the conversations are under way", timeout: .seconds(60)) {
                        bed.llm.totalArrivals >= 6
                    }

                    try await TestAMQP.setMemoryAlarm(true)
                    let during: Result<(states: [String: String], refused: HTTPResponse), any Error>
                    do {
                        try await eventually("the broker blocks the publishing connection", timeout: .seconds(60)) {
                            try await TestAMQP.connectionStates(named: name)["\(name)-publish"] == "blocked"
                        }
                        let refused = try await gateway.request(
                            .post,
                            "/api/conversations/\(ids[1])/message",
                            body: #"{"message": "sent during the alarm"}"#
                        )
                        during = .success((try await TestAMQP.connectionStates(named: name), refused))
                    } catch {
                        during = .failure(error)
                    }
                    try await TestAMQP.setMemoryAlarm(false)

                    let (states, refused) = try during.get()
                    // `blocking`: the alarm is on, but a connection that does not publish is not blocked — its
                    // deliveries and acks go on.
                    let consumingState = states["\(name)-consume"]
                    #expect(consumingState == "running" || consumingState == "blocking", "\(states)")
                    #expect(refused.status == 503, "\(refused.status) \(refused.text)")
                    #expect(Int(refused.headers["retry-after"] ?? "") ?? 0 > 0)
                    #expect((try? JSONValue(parsing: refused.body))?["code"]?.stringValue?.isEmpty == false)

                    for id in ids {
                        let uuid = try #require(UUID(uuidString: Self.dashed(id)))
                        let ended = try await bed.waitFor(uuid, [.finished, .error], timeout: .seconds(120))
                        #expect(ended.agentState == .finished, "\(ended.lastError ?? "")")
                    }
                    let seen = try await feed.value
                    let stored = try await bed.events(try #require(UUID(uuidString: Self.dashed(watched))))
                    #expect(seen.ids == stored.compactMap(\.id), "the live feed delivered every event, in order")
                }
            }
        }
    }

    /// A conversation id as the API gives it (32 hex digits) or as a UUID string.
    static func dashed(_ id: String) -> String {
        guard id.count == 32 else { return id }
        var text = id
        for offset in [8, 13, 18, 23] { text.insert("-", at: text.index(text.startIndex, offsetBy: offset)) }
        return text
    }
}
