import DeckhandCore
import Testing

/// What a caller may choose within the operator's limits (`UserLimits`), without I/O.
@Suite struct UserLimitsTests {
    static var limits: UserLimits {
        var limits = UserLimits()
        limits.maxIterations = 50
        limits.maxBudget = 3
        limits.defaultBackend = nil
        limits.userBackends = [.process]
        limits.defaultModel = "house"
        limits.userModels = ["priced", "unpriced"]
        limits.prices = PriceTable(["house": .init(promptPerMillion: 1, completionPerMillion: 1)])
        limits.prices.prices["priced"] = .init(promptPerMillion: 2, completionPerMillion: 2)
        return limits
    }

    @Test func aCallerMayLowerALimitButNeverRaiseIt() throws {
        let granted = try Self.limits.grant(.init(maxIterations: 10, maxBudget: 1)).get()
        #expect(granted.maxIterations == 10 && granted.maxBudget == 1)
        let defaults = try Self.limits.grant(.init()).get()
        #expect(defaults.maxIterations == 50 && defaults.maxBudget == 3 && defaults.model == nil)
        #expect(throws: UserLimits.Refusal.self) { try Self.limits.grant(.init(maxIterations: 51)).get() }
        #expect(throws: UserLimits.Refusal.self) { try Self.limits.grant(.init(maxBudget: 3.01)).get() }
    }

    @Test func whatWakesAConversationIsHeldToTheCaps() {
        // What puts a conversation to work, by command and the agent's state.
        #expect(UserLimits.wakes(.start, from: nil), "a new conversation")
        for state in [AgentState.stopped, .awaitingUserInput, .finished, .error, .paused] {
            #expect(UserLimits.wakes(.start, from: state), "start from \(state)")
        }
        for state in [AgentState.loading, .running] {
            #expect(!UserLimits.wakes(.start, from: state) && !UserLimits.wakes(.message, from: state))
        }
        for state in [AgentState.stopped, .awaitingUserInput, .finished, .error, .rejected] {
            #expect(UserLimits.wakes(.message, from: state), "message to \(state)")
        }
        #expect(!UserLimits.wakes(.message, from: .paused), "a message to a paused agent waits for resume")
        #expect(UserLimits.wakes(.resume, from: .paused) && !UserLimits.wakes(.resume, from: .finished))
        for command in [ConversationCommand.stop, .pause, .delete] {
            #expect(!UserLimits.mayWake(command) && !UserLimits.wakes(command, from: .stopped), "\(command)")
        }

        var limits = UserLimits()
        #expect(!limits.capsUsers)
        #expect(limits.capacityRefusal(.init(running: 1000, sandboxes: 1000), addsSandbox: true) == nil)
        limits.maxRunningConversations = 2
        limits.maxLiveSandboxes = 3
        #expect(limits.capsUsers)
        #expect(limits.capacityRefusal(.init(running: 1, sandboxes: 2), addsSandbox: true) == nil)
        #expect(
            limits.capacityRefusal(.init(running: 2, sandboxes: 0), addsSandbox: false)?.code
                == "LIMIT$RUNNING_CONVERSATIONS"
        )
        #expect(
            limits.capacityRefusal(.init(running: 0, sandboxes: 3), addsSandbox: true)?.code == "LIMIT$LIVE_SANDBOXES"
        )
        // A conversation that keeps its live sandbox adds none.
        #expect(limits.capacityRefusal(.init(running: 0, sandboxes: 3), addsSandbox: false) == nil)
    }

    @Test func backendsAndModelsComeFromTheOperatorsLists() throws {
        #expect(try Self.limits.grant(.init(backend: "process")).get().backend == .process)
        #expect(Self.refusal(.init(backend: "docker"))?.code == "LIMIT$BACKEND")
        #expect(Self.refusal(.init(backend: "docker"))?.message.contains("process") == true)
        var fixed = Self.limits
        fixed.userBackends = []
        fixed.defaultBackend = .docker
        #expect(try fixed.grant(.init(backend: "docker")).get().backend == .docker, "the default may be named")
        fixed.defaultBackend = nil
        #expect(Self.refusal(.init(backend: "process"), fixed)?.message.contains("none") == true)
        #expect(try Self.limits.grant(.init(model: "house")).get().model == nil)
        #expect(try Self.limits.grant(.init(model: "priced")).get().model == "priced")
        #expect(Self.refusal(.init(model: "other"))?.code == "LIMIT$MODEL")
        var any = Self.limits
        any.userModels = ["*"]
        any.defaultPrice = .init(promptPerMillion: 9, completionPerMillion: 9)
        #expect(try any.grant(.init(model: "other")).get().model == "other")
    }

    @Test func anUnpricedModelIsNeverFreeUnderABudget() throws {
        #expect(Self.refusal(.init(model: "unpriced"))?.code == "LIMIT$UNPRICED_MODEL")
        var noBudget = Self.limits
        noBudget.maxBudget = 0
        #expect(try noBudget.grant(.init(model: "unpriced")).get().maxBudget == nil, "no budget: cost is not counted")
        #expect(Self.refusal(.init(model: "unpriced", maxBudget: 1), noBudget)?.code == "LIMIT$UNPRICED_MODEL")
        var priced = Self.limits
        priced.defaultPrice = .init(promptPerMillion: 5, completionPerMillion: 15)
        #expect(priced.price(of: "unpriced") == priced.defaultPrice)
        #expect(try priced.grant(.init(model: "unpriced")).get().model == "unpriced")
    }

    @Test func theBudgetInForceIsTheLowerOfBoth() {
        #expect(Self.limits.budget(conversation: 1) == 1)
        #expect(Self.limits.budget(conversation: 7) == 3, "a row above the cap is held to it")
        #expect(Self.limits.budget(conversation: nil) == 3)
        var none = Self.limits
        none.maxBudget = 0
        #expect(none.budget(conversation: nil) == nil)
        #expect(none.budget(conversation: 2) == 2)
    }

    static func refusal(_ request: UserLimits.Request, _ limits: UserLimits = limits) -> UserLimits.Refusal? {
        if case .failure(let refusal) = limits.grant(request) { return refusal }
        return nil
    }
}
