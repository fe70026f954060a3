import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// The answer of an open route that costs the gateway work (`/health` asks PostgreSQL and RabbitMQ, `/metrics`
/// asks the broker for queue depths), computed at most once per `maxAge` however many callers ask: callers in
/// between share the last answer, and callers during a computation wait for it rather than start another.
final class CachedAnswer: Sendable {
    struct Answer: Sendable {
        var status: HTTPResponse.Status
        var contentType: String
        var body: [UInt8]
    }

    let maxAge: Duration
    private let latest = Mutex<(at: ContinuousClock.Instant, task: Task<Answer, Never>)?>(nil)

    init(maxAge: Duration = .seconds(1)) { self.maxAge = maxAge }

    func response(_ compute: @escaping @Sendable () async -> Answer) async -> Response {
        let task = latest.withLock { latest -> Task<Answer, Never> in
            let now = ContinuousClock.now
            if let latest, now - latest.at < maxAge { return latest.task }
            let task = Task { await compute() }
            latest = (now, task)
            return task
        }
        let answer = await task.value
        return Response(
            status: answer.status,
            headers: [.contentType: answer.contentType],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body))
        )
    }
}

extension Router {
    /// `GET /health` (``Health``) and `GET /metrics` (Prometheus text from `metrics`): open to anyone, and each
    /// asks the dependencies, so each is answered from an answer at most a second old. The gateway's and every
    /// worker role's.
    func addProbes(health: Health, metrics: @escaping @Sendable () async -> [UInt8]) {
        let healthAnswer = CachedAnswer()
        get("health") { _, _ in await healthAnswer.response { await health.answer() } }
        let metricsAnswer = CachedAnswer()
        get("metrics") { _, _ in
            await metricsAnswer.response {
                CachedAnswer.Answer(
                    status: .ok,
                    contentType: "text/plain; version=0.0.4; charset=utf-8",
                    body: await metrics()
                )
            }
        }
    }
}
