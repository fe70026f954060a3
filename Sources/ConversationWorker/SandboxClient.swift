import Agent
import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import Messaging

/// Sends actions to a sandbox's `/execute_action` (PROTOCOL.md §C) and reads back the observation.
struct SandboxClient: Sendable {
    let http: HTTPClient

    /// The sandbox could not be reached (gone, paused, restarting): the runtime workers must look at it.
    struct Unreachable: Error, CustomStringConvertible {
        var description: String
    }

    /// The header that names an action to the sandbox server, which runs each named action once and answers
    /// a repeated request with the observation it kept (`ActionJournal` in the sandbox server).
    static let actionIDHeader = "X-Deckhand-Action-ID"

    /// Runs `action` (a stored action event of `conversation`) and returns its observation (without id;
    /// `cause` and `tool_call_metadata` set). The request names the action, so sending it again (a
    /// redelivered step) collects the observation of the run the sandbox already had instead of running it
    /// twice. A sandbox that answers with an error gives an `error` observation; one that cannot be reached
    /// throws ``Unreachable``.
    func execute(
        _ action: Event,
        of conversation: UUID,
        in sandbox: SandboxEndpoint,
        defaultTimeout: Duration
    ) async throws -> Event {
        guard let url = sandbox.url else { throw Unreachable(description: "the sandbox has no address") }
        var wire = action.json
        wire["id"] = nil
        wire["llm_metrics"] = nil
        wire["tool_call_metadata"] = nil
        let limit = action.timeout.map { Duration.milliseconds(Int64($0 * 1000)) } ?? defaultTimeout
        var headers: HTTPHeaders = ["Content-Type": "application/json"]
        if let key = sandbox.sessionAPIKey { headers.add(name: "X-Session-API-Key", value: key) }
        if let id = action.id {
            headers.add(name: Self.actionIDHeader, value: "\(conversation.uuidString.lowercased())/\(id)")
        }
        // The step's trace goes on into the sandbox server's request.
        if let trace = Traceparent.current { headers.add(name: "traceparent", value: Traceparent.child(of: trace)) }
        let request = HTTPRequest(
            method: .post,
            url: url + "/execute_action",
            headers: headers,
            body: Array(JSONValue.object(["action": wire]).serialized.utf8),
            connectTimeout: .seconds(5),
            timeout: max(limit, defaultTimeout) + .seconds(30)
        )
        let response: HTTPResponse
        do {
            response = try await http.execute(request)
        } catch let error as DeckhandError {
            throw Unreachable(description: "the sandbox did not answer: \(error.message)")
        }
        var observation: Event
        switch response.status {
        case 200:
            guard let json = try? JSONValue(parsing: response.body),
                let event = try? Event(json: json), event.observation != nil
            else {
                observation = .errorObservation("The sandbox answered with something that is not an observation.")
                break
            }
            observation = event
        case 502, 503, 504:
            throw Unreachable(description: "the sandbox answered HTTP \(response.status)")
        default:
            let detail =
                (try? JSONValue(parsing: response.body))?["detail"]?.stringValue
                ?? String(decoding: response.body.prefix(500), as: UTF8.self)
            observation = .errorObservation("The sandbox could not run the action (HTTP \(response.status)): \(detail)")
        }
        observation.id = nil
        observation.timestamp = Date()
        observation.cause = action.id
        observation.toolCallMetadata = action.toolCallMetadata
        return observation
    }
}
