import DeckhandStore
import Testing

@testable import Gateway

/// What the Runtime API says of a session's sandbox, in the words OpenHands' `RemoteRuntime` acts on.
@Suite struct RuntimeAPIStatusTests {
    @Test func everySandboxStatusHasAnAnswer() {
        let table: [(SandboxRecord.Status?, status: String, pod: String)] = [
            (nil, "stopped", "not found"), (.starting, "running", "pending"), (.running, "running", "ready"),
            (.paused, "paused", "paused"), (.stopped, "stopped", "stopped"), (.error, "stopped", "failed"),
            (.lost, "stopped", "failed"), (.warm, "running", "ready"),
        ]
        for (sandbox, status, pod) in table {
            #expect(RuntimeAPIStatus.status(sandbox) == status, "\(String(describing: sandbox))")
            #expect(RuntimeAPIStatus.podStatus(sandbox) == pod, "\(String(describing: sandbox))")
        }
    }

    /// OpenHands' client attaches to `running` and then waits for `ready`; it starts again what is `stopped`;
    /// `failed` ends its wait with an error. A sandbox on its way up must never read as `stopped` (the client
    /// would start a second one) and only a sandbox that answers may read as `ready`.
    @Test func onlyAnAnsweringSandboxIsReadyAndNoLiveOneIsStopped() {
        for sandbox: SandboxRecord.Status in [.starting, .running, .paused] {
            #expect(RuntimeAPIStatus.status(sandbox) != "stopped")
        }
        let ready = [SandboxRecord.Status.warm, .starting, .running, .paused, .stopped, .error, .lost]
            .filter { RuntimeAPIStatus.podStatus($0) == "ready" }
        #expect(ready == [.warm, .running])
    }
}
