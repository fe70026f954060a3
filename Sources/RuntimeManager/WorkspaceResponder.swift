import AMQP
import DeckhandCore
import DeckhandStore
import Foundation
import HTTPClient
import Logging
import Messaging

/// Answers workspace-file requests (``WorkspaceRequest``) from gateways: finds the conversation's running
/// sandbox and asks its server (`/list_files`, `/execute_action` read, `/upload_file`, `/download_files`).
/// Every request gets a reply with the HTTP status the gateway answers with; a sandbox that is not running
/// is a 409.
struct WorkspaceResponder: Sendable {
    let bus: CommandBus
    let store: SandboxStore
    let http: HTTPClient
    let logger: Logger

    /// The largest workspace zip sent back through the broker.
    static let maxZipBytes = 64 << 20

    /// An answer: status, content type, body.
    struct Answer {
        var status: Int
        var contentType = "application/json"
        var body: [UInt8]

        static func json(_ value: JSONValue, status: Int = 200) -> Answer {
            Answer(status: status, body: Array(value.serialized.utf8))
        }

        static func error(_ status: Int, _ code: String, _ message: String) -> Answer {
            .json(.apiError(code: code, message: message), status: status)
        }
    }

    func handle(_ delivery: AMQPDelivery) async {
        let answer: Answer
        if let text = delivery.properties.headers[WorkspaceRequest.header]?.stringValue,
            let request = try? JSONDecoder().decode(WorkspaceRequest.self, from: Data(text.utf8))
        {
            do {
                answer = try await self.answer(
                    request,
                    body: delivery.body,
                    contentType: delivery.properties.contentType
                )
            } catch {
                logger.warning(
                    "workspace request failed",
                    metadata: [
                        LogKey.conversationID.rawValue: "\(request.conversationID)", LogKey.error.rawValue: "\(error)",
                    ]
                )
                answer = .error(502, "SANDBOX$UNREACHABLE", "the conversation's sandbox did not answer")
            }
        } else {
            answer = .error(400, "REQUEST$INVALID", "not a workspace request")
        }
        var message = AMQPMessage(body: answer.body)
        message.properties.contentType = answer.contentType
        message.properties.headers[WorkspaceRequest.statusHeader] = .int(Int64(answer.status))
        do {
            try await bus.connection.reply(to: delivery, with: message)
        } catch {
            logger.warning("cannot reply to a workspace request", metadata: [LogKey.error.rawValue: "\(error)"])
        }
        delivery.ack()
    }

    func answer(_ request: WorkspaceRequest, body: [UInt8], contentType: String?) async throws -> Answer {
        // The gateway already refused such paths; a request from anywhere else is refused here too.
        guard WorkspacePath.relative(request.path) == request.path else {
            return .error(422, "REQUEST$INVALID_FIELD", "the path must stay inside the workspace")
        }
        guard let sandbox = try await store.liveSandbox(conversation: request.conversationID),
            sandbox.status == .running,
            let url = sandbox.url
        else {
            return .error(
                409,
                "SANDBOX$NOT_RUNNING",
                "the conversation's sandbox is not running: start the conversation"
            )
        }
        try? await store.touch(id: sandbox.id)
        var headers: HTTPHeaders = [:]
        if let key = sandbox.sessionAPIKey { headers.add(name: "X-Session-API-Key", value: key) }
        switch request.operation {
        case .listFiles:
            headers.add(name: "Content-Type", value: "application/json")
            let response = try await http.execute(
                HTTPRequest(
                    method: .post,
                    url: url + "/list_files",
                    headers: headers,
                    body: Array(JSONValue.object(["path": .string(request.path)]).serialized.utf8),
                    timeout: .seconds(30)
                )
            )
            return relay(response)
        case .selectFile:
            headers.add(name: "Content-Type", value: "application/json")
            let action: JSONValue = ["action": ["action": "read", "args": ["path": .string(request.path)]]]
            let response = try await http.execute(
                HTTPRequest(
                    method: .post,
                    url: url + "/execute_action",
                    headers: headers,
                    body: Array(action.serialized.utf8),
                    timeout: .seconds(30)
                )
            )
            guard response.status == 200, let observation = try? JSONValue(parsing: response.body) else {
                return relay(response)
            }
            let content = observation["content"]?.stringValue ?? ""
            if observation["observation"] == "read" { return .json(["code": .string(content)]) }
            if content.lowercased().contains("binary") {
                return .error(415, "FILE$BINARY", "\(request.path) is a binary file")
            }
            if content.contains("not found") || content.contains("does not exist") {
                return .error(404, "FILE$NOT_FOUND", "\(request.path) does not exist")
            }
            return .error(422, "FILE$UNREADABLE", content)
        case .uploadFiles:
            return try await upload(request, body: body, contentType: contentType ?? "", url: url, headers: headers)
        case .zipDirectory:
            // Read as it comes, and given up past the cap: a workspace of any size never sits in memory whole.
            let response = try await http.stream(
                HTTPRequest(
                    url: url + "/download_files" + Self.query(["path": request.path]),
                    headers: headers,
                    timeout: .seconds(120)
                )
            )
            var body: [UInt8] = []
            for try await chunk in response.body {
                guard body.count + chunk.count <= Self.maxZipBytes else {
                    return .error(413, "WORKSPACE$TOO_LARGE", "the zip is larger than \(Self.maxZipBytes >> 20) MiB")
                }
                body += chunk
            }
            guard response.status == 200 else {
                return relay(HTTPResponse(status: response.status, headers: response.headers, body: body))
            }
            return Answer(status: 200, contentType: "application/zip", body: body)
        }
    }

    /// Uploads each file part of the form into `request.path`, one sandbox upload each.
    func upload(
        _ request: WorkspaceRequest,
        body: [UInt8],
        contentType: String,
        url: String,
        headers: HTTPHeaders
    ) async throws -> Answer {
        let form: MultipartFormData
        do {
            form = try MultipartFormData(contentType: contentType, body: body)
        } catch {
            return .error(400, "REQUEST$INVALID_MULTIPART", error.message)
        }
        // Every part is a file (OpenHands' `files`): one without a file name is refused, not silently dropped.
        if let field = form.parts.first(where: { $0.filename == nil }) {
            return .error(
                422,
                "REQUEST$INVALID_FIELD",
                "the part `\(field.name)` has no filename: upload files as parts named files, each with a filename"
            )
        }
        var uploaded: [JSONValue] = []
        var skipped: [JSONValue] = []
        let query = Self.query(["destination": request.path, "recursive": "false"])
        for part in form.parts {
            guard let filename = part.filename else { continue }
            let name = (filename as NSString).lastPathComponent
            guard !name.isEmpty, name != ".", name != ".." else {
                skipped.append(["name": .string(filename), "reason": "not a usable file name"])
                continue
            }
            let single = MultipartFormData(parts: [
                .init(name: "file", filename: name, contentType: part.contentType, body: part.body)
            ]).encoded()
            var fields = headers
            fields.add(name: "Content-Type", value: single.contentType)
            let response = try await http.execute(
                HTTPRequest(
                    method: .post,
                    url: url + "/upload_file" + query,
                    headers: fields,
                    body: single.body,
                    timeout: .seconds(120)
                )
            )
            if response.isSuccess {
                uploaded.append(.string(name))
            } else {
                let detail =
                    (try? JSONValue(parsing: response.body))?["detail"]?.stringValue ?? "HTTP \(response.status)"
                skipped.append(["name": .string(name), "reason": .string(detail)])
            }
        }
        return .json(["uploaded_files": .array(uploaded), "skipped_files": .array(skipped)])
    }

    /// `?name=value&…`, percent-encoded, in name order.
    static func query(_ items: [String: String]) -> String {
        var components = URLComponents()
        components.queryItems = items.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) }
        return components.percentEncodedQuery.map { "?" + $0 } ?? ""
    }

    /// A sandbox answer passed on: its JSON when it succeeded, else an error naming its status.
    func relay(_ response: HTTPResponse) -> Answer {
        if response.isSuccess { return Answer(status: 200, body: response.body) }
        let detail =
            (try? JSONValue(parsing: response.body))?["detail"]?.stringValue
            ?? String(decoding: response.body.prefix(300), as: UTF8.self)
        if response.status == 404 { return .error(404, "FILE$NOT_FOUND", detail) }
        return .error(502, "SANDBOX$ERROR", "the sandbox answered HTTP \(response.status): \(detail)")
    }
}
