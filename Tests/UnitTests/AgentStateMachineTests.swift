import DeckhandCore
import Testing

/// The agent's transition table (`AgentStateMachine`), without a database.
@Suite struct AgentStateMachineTests {
    typealias Machine = AgentStateMachine

    @Test func theTable() {
        let cases: [(Machine.Input, AgentState, AgentState?, Set<Machine.Effect>)] = [
            (.start, .stopped, .loading, [.requestSandbox]),
            (.start, .awaitingUserInput, .loading, [.requestSandbox]),
            (.start, .loading, .loading, [.requestSandbox]),
            (.start, .running, nil, []),
            (.message, .awaitingUserInput, .running, [.startChain]),
            (.message, .finished, .running, [.startChain]),
            (.message, .error, .running, [.startChain]),
            (.message, .stopped, .loading, [.requestSandbox, .resumeOnReady]),
            (.message, .loading, .loading, [.resumeOnReady]),
            (.message, .running, nil, []),
            (.message, .paused, nil, []),
            (.pause, .running, .paused, []),
            (.pause, .finished, .paused, []),
            (.pause, .stopped, nil, []),
            (.pause, .paused, nil, []),
            (.resume, .paused, .running, [.startChain]),
            (.resume, .running, nil, []),
            (.stop, .running, .stopped, [.stopSandbox]),
            (.stop, .paused, .stopped, [.stopSandbox]),
            (.stop, .stopped, nil, []),
            (.sandboxReady(pendingTask: true), .loading, .running, [.startChain]),
            (.sandboxReady(pendingTask: false), .loading, .awaitingUserInput, []),
            (.sandboxReady(pendingTask: true), .stopped, nil, []),
            (.sandboxFailed, .loading, .error, []),
            (.sandboxFailed, .running, .error, []),
            (.sandboxFailed, .finished, nil, []),
            (.stepEnded(.proceed), .running, .running, [.nextStep]),
            (.stepEnded(.userMessagePending), .running, .running, [.nextStep]),
            (.stepEnded(.finished), .running, .finished, []),
            (.stepEnded(.awaitingUser), .running, .awaitingUserInput, []),
            (.stepEnded(.sandboxLost), .running, .loading, [.requestSandbox, .resumeOnReady]),
            (.stepEnded(.finished), .paused, nil, []),
            (.stepFailed, .running, .error, []),
            (.stepFailed, .stopped, nil, []),
        ]
        for (input, state, to, effects) in cases {
            let transition = Machine.apply(input, in: state)
            #expect(transition?.to == to, "\(input) in \(state)")
            #expect((transition?.effects ?? []) == effects, "\(input) in \(state)")
        }
    }

    @Test func theSourceStatesTheWorkersBindIntoTheirSQL() {
        #expect(Set(Machine.sources(of: .pause)) == [.running, .loading, .awaitingUserInput, .finished, .rateLimited])
        #expect(Machine.sources(of: .resume) == [.paused])
        #expect(Set(Machine.sources(of: .stop)) == Set(AgentState.allCases).subtracting([.stopped]))
        #expect(Set(Machine.sources(of: .sandboxFailed)) == [.loading, .running])
        #expect(Machine.sources(of: .stepFailed) == [.running])
        #expect(Set(AgentState.idle).isSubset(of: Set(Machine.sources(of: .message))))
        #expect(Machine.sqlArray([.running, .paused]) == "{paused,running}")
    }

    @Test func whatHoldsForEveryStateAndInput() {
        let inputs: [Machine.Input] =
            [
                .start, .message, .pause, .resume, .stop, .sandboxReady(pendingTask: true),
                .sandboxReady(pendingTask: false), .sandboxFailed, .stepFailed,
            ]
            + Machine.StepEnd.allCases.map { .stepEnded($0) }
        for state in AgentState.allCases {
            for input in inputs {
                guard let transition = Machine.apply(input, in: state) else { continue }
                // A chain starts only into `running`, and only from outside it.
                if transition.effects.contains(.startChain) {
                    #expect(transition.to == .running && state != .running, "\(input) in \(state)")
                }
                // Only a running chain goes on; a sandbox is asked for only by whoever waits for it.
                if transition.effects.contains(.nextStep) { #expect(state == .running) }
                if transition.effects.contains(.requestSandbox) { #expect(transition.to == .loading) }
                // Out of `stopped` only a start or a message, and only to wait for the sandbox.
                if state == .stopped { #expect(transition.to == .loading, "\(input) in stopped") }
            }
        }
        // What wakes a conversation: into `loading` or `running` from rest.
        #expect(Machine.wakes(.start, from: nil) && Machine.wakes(.message, from: .stopped))
        #expect(Machine.wakes(.resume, from: .paused) && !Machine.wakes(.message, from: .paused))
        #expect(!Machine.wakes(.start, from: .loading) && !Machine.wakes(.stop, from: .running))
    }
}
