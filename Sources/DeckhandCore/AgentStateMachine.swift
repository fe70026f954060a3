/// How a conversation's agent moves between OpenHands' agent states, as one table: the conversation workers
/// ask it what an input does (and bind its source states into their SQL), the gateway asks it what wakes a
/// conversation, and its rules are unit-tested without a database.
public enum AgentStateMachine {
    /// What happens to a conversation.
    public enum Input: Sendable, Hashable {
        /// `start`: open the conversation, or wake it.
        case start
        /// A user message.
        case message
        case pause
        case resume
        case stop
        /// The sandbox answered; `pendingTask`: a task waits for it (`resume_on_ready`).
        case sandboxReady(pendingTask: Bool)
        /// No sandbox can be had.
        case sandboxFailed
        /// A step ended this way.
        case stepEnded(StepEnd)
        /// A step cannot go on (a limit reached, the model or the sandbox failed for good).
        case stepFailed
    }

    /// How a step of a running chain ended.
    public enum StepEnd: Sendable, Hashable, CaseIterable {
        /// Its actions ran: the chain goes on.
        case proceed
        /// The agent called `finish`.
        case finished
        /// The agent answered without a tool call.
        case awaitingUser
        /// It would wait, but a user message arrived while it ran: the chain goes on to read it.
        case userMessagePending
        /// The sandbox was lost: a new one is asked for, and the task goes on there.
        case sandboxLost
    }

    /// What the worker does besides moving the state.
    public enum Effect: Sendable, Hashable {
        /// A new step chain starts with the next step number.
        case startChain
        /// The running chain goes on with its next step.
        case nextStep
        /// The runtime workers are asked for the conversation's sandbox.
        case requestSandbox
        /// The task goes on once the sandbox is ready (`resume_on_ready`).
        case resumeOnReady
        /// The runtime workers stop the sandbox (its files are kept).
        case stopSandbox
    }

    /// Where an input takes the agent, and what else it sets off.
    public struct Transition: Sendable, Equatable {
        public var to: AgentState
        public var effects: Set<Effect>

        public init(_ to: AgentState, _ effects: Set<Effect> = []) {
            self.to = to
            self.effects = effects
        }
    }

    /// The states in which the agent is at work (a chain runs, or waits for its sandbox to go on).
    public static let atWork: Set<AgentState> = [.loading, .running]

    /// What `input` does to an agent in `state`; nil when it changes nothing (the command was applied
    /// already, or does not apply — a message is then only stored, for the next step or a later resume).
    public static func apply(_ input: Input, in state: AgentState) -> Transition? {
        switch input {
        case .start:
            // A running chain asks for the sandbox itself when it needs one.
            return state == .running ? nil : Transition(.loading, [.requestSandbox])
        case .message:
            if AgentState.idle.contains(state) { return Transition(.running, [.startChain]) }
            switch state {
            case .stopped: return Transition(.loading, [.requestSandbox, .resumeOnReady])
            case .loading: return Transition(.loading, [.resumeOnReady])
            default: return nil
            }
        case .pause:
            let pausable: Set<AgentState> = [.running, .loading, .awaitingUserInput, .finished, .rateLimited]
            return pausable.contains(state) ? Transition(.paused) : nil
        case .resume:
            return state == .paused ? Transition(.running, [.startChain]) : nil
        case .stop:
            return state == .stopped ? nil : Transition(.stopped, [.stopSandbox])
        case .sandboxReady(let pendingTask):
            guard state == .loading else { return nil }
            return pendingTask ? Transition(.running, [.startChain]) : Transition(.awaitingUserInput)
        case .sandboxFailed:
            return atWork.contains(state) ? Transition(.error) : nil
        case .stepEnded(let end):
            guard state == .running else { return nil }
            switch end {
            case .proceed, .userMessagePending: return Transition(.running, [.nextStep])
            case .finished: return Transition(.finished)
            case .awaitingUser: return Transition(.awaitingUserInput)
            case .sandboxLost: return Transition(.loading, [.requestSandbox, .resumeOnReady])
            }
        case .stepFailed:
            return state == .running ? Transition(.error) : nil
        }
    }

    /// The states in which `input` does something, for SQL that must match only those
    /// (`agent_state = ANY($n::text[])`, with ``sqlArray(_:)``).
    public static func sources(of input: Input) -> [AgentState] {
        AgentState.allCases.filter { apply(input, in: $0) != nil }
    }

    /// Whether `input` puts an agent in `state` to work (from rest into ``atWork``): what the per-user caps
    /// count. A new conversation is a `start` from no state.
    public static func wakes(_ input: Input, from state: AgentState?) -> Bool {
        guard let state else { return input == .start }
        guard !atWork.contains(state), let transition = apply(input, in: state) else { return false }
        return atWork.contains(transition.to)
    }

    /// `states` as a PostgreSQL text array literal (`{running,paused}`), to bind as `$n::text[]`.
    public static func sqlArray(_ states: some Sequence<AgentState>) -> String {
        "{" + states.map(\.rawValue).sorted().joined(separator: ",") + "}"
    }
}
