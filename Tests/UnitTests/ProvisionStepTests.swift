import DeckhandStore
import Foundation
import Testing

@testable import RuntimeManager

/// The provision loop's decision table (no I/O).
@Suite struct ProvisionStepTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func withoutALiveSandboxClaimOrCreate() {
        for status: SandboxRecord.Status? in [nil, .error, .lost] {
            #expect(ProvisionStep.next(status: status, leaseUntil: nil, now: now) == .claimOrCreate)
        }
    }

    @Test func aRunningOrPausedSandboxIsHandedOutAgain() {
        for status: SandboxRecord.Status in [.running, .warm, .paused, .stopped] {
            #expect(ProvisionStep.next(status: status, leaseUntil: nil, now: now) == .handOut)
        }
    }

    @Test func aStartingSandboxIsWaitedForUntilItsLeaseRunsOut() {
        let held = now.addingTimeInterval(5)
        let expired = now.addingTimeInterval(-0.001)
        #expect(ProvisionStep.next(status: .starting, leaseUntil: held, now: now) == .wait)
        #expect(ProvisionStep.next(status: .starting, leaseUntil: expired, now: now) == .takeOver)
        #expect(ProvisionStep.next(status: .starting, leaseUntil: now, now: now) == .takeOver)
        #expect(ProvisionStep.next(status: .starting, leaseUntil: nil, now: now) == .takeOver)
    }
}
