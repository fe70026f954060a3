import DeckhandCore
import LLM

/// The history as the model sees it after condensation: the latest `condensation` event hides the events
/// it summarised (`forgotten_events_start_id` … `forgotten_events_end_id`) and its summary takes their place.
public enum CondensedView {
    public struct Item: Sendable {
        public var event: Event
        public var step: Int?
        /// Set on the item that stands for the forgotten events.
        public var summary: String?
    }

    /// The latest condensation's forgotten range and summary.
    public static func latest(_ events: [StoredEvent]) -> (start: Int, end: Int, summary: String)? {
        guard let condensation = events.last(where: { $0.event.action == "condensation" })?.event,
            let start = condensation.args["forgotten_events_start_id"]?.intValue,
            let end = condensation.args["forgotten_events_end_id"]?.intValue
        else { return nil }
        return (start, end, condensation.args["summary"]?.stringValue ?? "")
    }

    public static func visible(_ events: [StoredEvent]) -> [Item] {
        let range = latest(events)
        var items: [Item] = []
        var summaryPlaced = false
        for stored in events where stored.event.action != "condensation" {
            if let range, (range.start...range.end).contains(stored.id) {
                if !summaryPlaced {
                    items.append(Item(event: stored.event, step: stored.step, summary: range.summary))
                    summaryPlaced = true
                }
                continue
            }
            items.append(Item(event: stored.event, step: stored.step, summary: nil))
        }
        return items
    }
}

/// The condensation rule: when the prompt grows past a budget, keep the first `keepFirst` events (the
/// system prompt and the task) and the last `keepRecent`, and replace everything between with a summary the
/// model writes. Neither kept part splits one model response's actions from their observations: the first
/// part grows and the recent part shrinks to a response's edge. A later condensation forgets from the same
/// start to a later end, and its summary covers the earlier summary too.
public struct Condenser: Sendable {
    public var keepFirst: Int
    public var keepRecent: Int

    public init(keepFirst: Int, keepRecent: Int) {
        self.keepFirst = keepFirst
        self.keepRecent = keepRecent
    }

    /// What to forget now: the id range, the events in it not summarised before, and the earlier summary.
    public struct Plan: Sendable {
        public var startID: Int
        public var endID: Int
        public var newlyForgotten: [StoredEvent]
        public var previousSummary: String?
    }

    /// Nil when too little lies between the kept parts to be worth a summary.
    public func plan(_ events: [StoredEvent]) -> Plan? {
        let relevant = events.filter {
            $0.event.action != "condensation" && $0.event.observation != "agent_state_changed"
        }
        guard relevant.count > keepFirst + keepRecent else { return nil }
        func sameResponse(_ a: StoredEvent, _ b: StoredEvent) -> Bool {
            a.step != nil && a.step == b.step && a.event.source != .user && b.event.source != .user
        }
        var firstEnd = min(keepFirst, relevant.count) - 1
        while firstEnd + 1 < relevant.count, sameResponse(relevant[firstEnd], relevant[firstEnd + 1]) { firstEnd += 1 }
        var recentStart = relevant.count - keepRecent
        while recentStart < relevant.count, recentStart > 0,
            sameResponse(relevant[recentStart - 1], relevant[recentStart])
        {
            recentStart += 1
        }
        let previous = CondensedView.latest(events)
        let startID = previous?.start ?? relevant[firstEnd + 1].id
        guard recentStart - 1 > firstEnd, recentStart <= relevant.count else { return nil }
        let endID = relevant[recentStart - 1].id
        let newStart = (previous?.end).map { $0 + 1 } ?? startID
        let newlyForgotten = relevant.filter { $0.id >= newStart && $0.id <= endID }
        guard endID >= startID, !newlyForgotten.isEmpty else { return nil }
        return Plan(startID: startID, endID: endID, newlyForgotten: newlyForgotten, previousSummary: previous?.summary)
    }

    /// The request that asks the model for the summary.
    public func summaryMessages(for plan: Plan, observationMaxChars: Int) -> [ChatMessage] {
        var text = ""
        if let previous = plan.previousSummary, !previous.isEmpty {
            text += "The summary so far:\n\(previous)\n\n"
        }
        text += "The events to add to it:\n"
        for stored in plan.newlyForgotten {
            let event = stored.event
            let body = event.action != nil ? (event.args.serialized) : event.content
            text += "[\(stored.id)] \(event.source.rawValue) \(event.typeName): "
            text += HistoryBuilder.truncate(body, limit: min(observationMaxChars, 2000)) + "\n"
        }
        return [
            .system(
                """
                You keep the memory of a software agent that works on a user's task. Summarise the events \
                you are given (and the summary so far, if any) for the agent itself: the task, what has been \
                done, what was learnt (files, commands, results, errors), and what remains. Keep exact file \
                paths, names and values that matter. Reply with the summary only.
                """
            ),
            .user(text),
        ]
    }

    /// The `condensation` action that records a summary.
    public static func event(_ plan: Plan, summary: String) -> Event {
        Event(
            source: .agent,
            message: "Summarised events \(plan.startID) to \(plan.endID).",
            kind: .action("condensation"),
            args: [
                "forgotten_event_ids": nil,
                "forgotten_events_start_id": .number(Double(plan.startID)),
                "forgotten_events_end_id": .number(Double(plan.endID)),
                "summary": .string(summary),
                "summary_offset": nil,
            ]
        )
    }
}
