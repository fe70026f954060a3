import DeckhandStore
import Foundation

/// What a provision does next about the conversation's live sandbox, if it has one: the decision table of
/// the provision loop, without I/O (``RuntimeWorker`` carries it out and asks again).
enum ProvisionStep: Equatable {
    /// No live sandbox: claim a warm one, else create one.
    case claimOrCreate
    /// Running, warm, paused or stopped: bring it back if it does not answer (resume, start, restart; it is
    /// lost only if its backend no longer has it), then hand it out.
    case handOut
    /// Another provision is starting it under a lease that still holds: wait and look again.
    case wait
    /// Its provision was interrupted (the lease ran out): take the lease over and start it afresh.
    case takeOver

    /// The step for the conversation's live sandbox `existing` (`status` and `leaseUntil`) at `now`.
    static func next(status: SandboxRecord.Status?, leaseUntil: Date?, now: Date) -> ProvisionStep {
        switch status {
        case nil, .error, .lost: .claimOrCreate
        case .running, .warm, .paused, .stopped: .handOut
        case .starting:
            if let leaseUntil, leaseUntil > now { .wait } else { .takeOver }
        }
    }
}
