/// What a user may choose for a conversation, within the limits the operator set (DESIGN §11): the gateway
/// checks a new conversation against it, and the conversation workers apply the same caps at run time. A
/// caller may lower a limit, never raise it.
public struct UserLimits: Sendable {
    /// `agent.max_iterations`: a conversation's default and its cap.
    public var maxIterations: Int = 100
    /// `agent.max_budget`: the most a conversation may spend in USD, and the cap of a caller's
    /// `max_budget_per_task` (0: no limit of the operator's).
    public var maxBudget: Double = 0
    /// `runtime.backend`: the operator's default backend (nil: chosen by the runtime workers, `auto`).
    public var defaultBackend: RuntimeSettings.Backend? = nil
    /// `runtime.user_backends`: the backends a caller may name.
    public var userBackends: [RuntimeSettings.Backend] = []
    /// `llm.model`: the model of a conversation that names none.
    public var defaultModel: String = "gpt-4o"
    /// `llm.user_models`: the models a caller may name besides the default (`*`: any).
    public var userModels: [String] = []
    /// `llm.prices` and `llm.default_price`: what a model costs, to count it against a budget.
    public var prices: PriceTable = .init()
    public var defaultPrice: PriceTable.Price? = nil
    /// `gateway.max_running_conversations`: conversations one user may have at work (loading or running) at
    /// once (0: no limit).
    public var maxRunningConversations: Int = 0
    /// `gateway.max_live_sandboxes`: sandboxes (starting, running or paused) one user's conversations may hold
    /// at once (0: no limit).
    public var maxLiveSandboxes: Int = 0

    public init() {}

    /// Every limit, from the whole configuration (the gateway's view).
    public init(configuration: DeckhandConfiguration) {
        self.init(agent: configuration.agent, llm: configuration.llm)
        defaultBackend = configuration.runtime.backend
        userBackends = configuration.runtime.userBackends
        maxRunningConversations = configuration.gateway.maxRunningConversations
        maxLiveSandboxes = configuration.gateway.maxLiveSandboxes
    }

    /// The limits a conversation worker applies while it runs: iterations, budget, prices.
    public init(agent: AgentSettings, llm: LLMSettings) {
        maxIterations = agent.maxIterations
        maxBudget = agent.maxBudget
        defaultModel = llm.model
        userModels = llm.userModels
        prices = llm.prices
        defaultPrice = llm.defaultPrice
    }

    /// What a caller asked for.
    public struct Request: Sendable, Equatable {
        public var backend: String?
        public var model: String?
        public var maxIterations: Int?
        public var maxBudget: Double?

        public init(backend: String? = nil, model: String? = nil, maxIterations: Int? = nil, maxBudget: Double? = nil) {
            self.backend = backend
            self.model = model
            self.maxIterations = maxIterations
            self.maxBudget = maxBudget
        }
    }

    /// What the conversation gets.
    public struct Granted: Sendable, Equatable {
        public var backend: RuntimeSettings.Backend?
        public var model: String?
        public var maxIterations: Int
        public var maxBudget: Double?
    }

    /// A choice outside the operator's limits: `code` names the limit, `message` says what is allowed.
    public struct Refusal: Error, Sendable, Equatable {
        public var code: DeckhandError.Code
        public var message: String
    }

    /// The backends a caller may name: `runtime.user_backends`, plus the operator's default when one is set.
    public var allowedBackends: [RuntimeSettings.Backend] {
        var allowed = userBackends
        if let defaultBackend, !allowed.contains(defaultBackend) { allowed.insert(defaultBackend, at: 0) }
        return allowed
    }

    /// Checks `request` against the limits: what the conversation gets, or why not.
    public func grant(_ request: Request) -> Result<Granted, Refusal> {
        var granted = Granted(backend: nil, model: nil, maxIterations: maxIterations, maxBudget: nil)
        if let name = request.backend {
            let allowed = allowedBackends
            guard let backend = RuntimeSettings.Backend(rawValue: name), allowed.contains(backend) else {
                let names =
                    allowed.isEmpty
                    ? "none: the operator's default applies" : allowed.map(\.rawValue).joined(separator: ", ")
                return .failure(
                    Refusal(
                        code: .limitBackend,
                        message: "`runtime` may name only the backends this deployment allows: \(names)"
                    )
                )
            }
            granted.backend = backend
        }
        if let model = request.model, model != defaultModel {
            guard userModels.contains("*") || userModels.contains(model) else {
                let names = ([defaultModel] + userModels).joined(separator: ", ")
                return .failure(Refusal(code: .limitModel, message: "`llm_model` may be one of: \(names)"))
            }
            granted.model = model
        }
        if let iterations = request.maxIterations {
            guard iterations <= maxIterations else {
                return .failure(
                    Refusal(
                        code: .limitMaxIterations,
                        message: "`max_iterations` may be at most \(maxIterations) (agent.max_iterations)"
                    )
                )
            }
            granted.maxIterations = iterations
        }
        if let budget = request.maxBudget, maxBudget > 0, budget > maxBudget {
            return .failure(
                Refusal(
                    code: .limitMaxBudget,
                    message: "`max_budget_per_task` may be at most \(maxBudget) USD (agent.max_budget)"
                )
            )
        }
        granted.maxBudget = budget(conversation: request.maxBudget)
        let model = granted.model ?? defaultModel
        if granted.maxBudget != nil, price(of: model) == nil {
            return .failure(Refusal(code: .limitUnpricedModel, message: Self.unpriced(model)))
        }
        return .success(granted)
    }

    /// The budget in force: the lower of the conversation's and the operator's (nil: none).
    public func budget(conversation: Double?) -> Double? {
        switch (conversation, maxBudget > 0 ? maxBudget : nil) {
        case (let mine?, let cap?): min(mine, cap)
        case (let mine?, nil): mine
        case (nil, let cap?): cap
        case (nil, nil): nil
        }
    }

    /// What `model` costs: its `llm.prices` entry, else `llm.default_price`; nil when neither says.
    public func price(of model: String) -> PriceTable.Price? {
        prices.price(of: model) ?? defaultPrice
    }

    // MARK: Per-user caps

    /// Whether any per-user cap is set (`gateway.max_running_conversations`, `gateway.max_live_sandboxes`).
    public var capsUsers: Bool { maxRunningConversations > 0 || maxLiveSandboxes > 0 }

    /// What one user holds at once: conversations at work (loading or running) and live sandboxes (starting or
    /// running).
    public struct Usage: Sendable, Equatable {
        public var running: Int
        public var sandboxes: Int

        public init(running: Int, sandboxes: Int) {
            self.running = running
            self.sandboxes = sandboxes
        }
    }

    /// The input of the agent's state machine a user's `command` is, when it is one that can put a
    /// conversation to work (`start`, `message`, `resume`).
    static func wakingInput(_ command: ConversationCommand) -> AgentStateMachine.Input? {
        switch command {
        case .start: .start
        case .message: .message
        case .resume: .resume
        default: nil
        }
    }

    /// Whether `command` can put a conversation to work at all.
    public static func mayWake(_ command: ConversationCommand) -> Bool { wakingInput(command) != nil }

    /// Whether `command` puts a conversation whose agent is in `state` to work, as the conversation workers
    /// handle it (``AgentStateMachine/wakes(_:from:)``): a `start` of any conversation not at work, a
    /// `message` to an idle or stopped one, a `resume` of a paused one. A new conversation is a `start` from
    /// no state.
    public static func wakes(_ command: ConversationCommand, from state: AgentState?) -> Bool {
        wakingInput(command).map { AgentStateMachine.wakes($0, from: state) } ?? false
    }

    /// Why a conversation may not go to work while its user holds `usage` (nil: it may). `addsSandbox`: it
    /// holds no live sandbox, so waking it starts one.
    public func capacityRefusal(_ usage: Usage, addsSandbox: Bool) -> Refusal? {
        if maxRunningConversations > 0, usage.running >= maxRunningConversations {
            return Refusal(
                code: .limitRunningConversations,
                message: "you have \(usage.running) conversations at work, the most this deployment allows "
                    + "(gateway.max_running_conversations): stop or finish one first"
            )
        }
        if addsSandbox, maxLiveSandboxes > 0, usage.sandboxes >= maxLiveSandboxes {
            return Refusal(
                code: .limitLiveSandboxes,
                message: "your conversations hold \(usage.sandboxes) running sandboxes, the most this deployment "
                    + "allows (gateway.max_live_sandboxes): stop a conversation first"
            )
        }
        return nil
    }

    /// Why a model without a price cannot run under a budget.
    public static func unpriced(_ model: String) -> String {
        "the model \(model) has no price in llm.prices and there is no llm.default_price: its cost could not be counted against the budget"
    }
}

extension DeckhandError.Code {
    /// A caller chose a backend outside `runtime.user_backends`.
    public static let limitBackend: Self = "LIMIT$BACKEND"
    /// A caller chose a model outside `llm.user_models`.
    public static let limitModel: Self = "LIMIT$MODEL"
    /// A caller asked for more iterations than `agent.max_iterations`.
    public static let limitMaxIterations: Self = "LIMIT$MAX_ITERATIONS"
    /// A caller asked for a budget above `agent.max_budget`.
    public static let limitMaxBudget: Self = "LIMIT$MAX_BUDGET"
    /// A model without a price where a budget applies.
    public static let limitUnpricedModel: Self = "LIMIT$UNPRICED_MODEL"
    /// The user has `gateway.max_running_conversations` at work.
    public static let limitRunningConversations: Self = "LIMIT$RUNNING_CONVERSATIONS"
    /// The user's conversations hold `gateway.max_live_sandboxes`.
    public static let limitLiveSandboxes: Self = "LIMIT$LIVE_SANDBOXES"
}
