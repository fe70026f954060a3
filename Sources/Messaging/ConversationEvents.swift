import AMQP
import Foundation

/// How a conversation's stored events travel on the events exchange: routing key `conversation.<id>`,
/// message id `<id>:<event id>` (so a copy is recognised), type `event`, the V0 event JSON as the body.
/// Workers publish them; gateways bind per conversation and read the event id back.
public enum ConversationEvents {
    /// The routing key of a conversation's events (and the binding key of one conversation).
    public static func routingKey(_ conversation: UUID) -> String {
        "conversation.\(conversation.uuidString.lowercased())"
    }

    /// The binding key of every conversation's events.
    public static let everyConversation = "conversation.#"

    /// The message id of event `event` of a conversation.
    public static func messageID(_ conversation: UUID, event: Int) -> String {
        "\(conversation.uuidString.lowercased()):\(event)"
    }

    /// The conversation and event id of a delivery from the events exchange; nil for anything else (a
    /// sandbox status, say).
    public static func identify(_ delivery: AMQPDelivery) -> (conversation: UUID, event: Int)? {
        guard delivery.routingKey.hasPrefix("conversation."),
            let conversation = UUID(uuidString: String(delivery.routingKey.dropFirst("conversation.".count))),
            let event = delivery.properties.messageID?.split(separator: ":").last.flatMap({ Int($0) })
        else { return nil }
        return (conversation, event)
    }
}

extension CommandBus {
    /// Publishes event `event` of a conversation, already serialized (after its commit; nobody need listen).
    public func publishConversationEvent(_ conversation: UUID, event: Int, json: [UInt8]) async throws {
        try await publishEvent(
            "event",
            body: json,
            routingKey: ConversationEvents.routingKey(conversation),
            messageID: ConversationEvents.messageID(conversation, event: event)
        )
    }
}
