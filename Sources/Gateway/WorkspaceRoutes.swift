import AMQP
import DeckhandCore
import DeckhandStore
import Foundation
import HTTPTypes
import Hummingbird
import Messaging
import NIOCore

/// The workspace-file routes (`list-files`, `select-file`, `upload-files`, `zip-directory`): each is an AMQP
/// request to the runtime workers (``WorkspaceRequest``, direct reply-to) with `gateway.files_timeout` as
/// its deadline (504 after it), answered with the status and body the worker replied.
struct WorkspaceRoutes: Sendable {
    let settings: GatewaySettings
    let store: GatewayStore
    let bus: CommandBus

    func add(to router: Router<GatewayRequestContext>) {
        let api = router.group("api/conversations")
        api.get(":id/list-files") { request, context in
            try await ask(.listFiles, path: request.uri.queryParameters.get("path") ?? "", context)
        }
        api.get(":id/select-file") { request, context in
            guard let file = request.uri.queryParameters.get("file"), !file.isEmpty else {
                throw APIError.invalidField("`file` (the path of a file in the workspace) is required")
            }
            return try await ask(.selectFile, path: file, context)
        }
        api.post(":id/upload-files") { request, context in
            let type = request.headers[.contentType] ?? ""
            guard type.lowercased().hasPrefix("multipart/form-data") else {
                throw APIError(
                    .unsupportedMediaType,
                    .requestNotMultipart,
                    "upload files as multipart/form-data (parts named files)"
                )
            }
            let body = try await request.body.collect(upTo: settings.maxUploadBytes)
            return try await ask(
                .uploadFiles,
                path: request.uri.queryParameters.get("path") ?? "",
                context,
                body: Array(buffer: body),
                contentType: type
            )
        }
        api.get(":id/zip-directory") { request, context in
            var response = try await ask(.zipDirectory, path: request.uri.queryParameters.get("path") ?? "", context)
            if response.status == .ok {
                response.headers[.contentDisposition] = "attachment; filename=\"workspace.zip\""
            }
            return response
        }
    }

    func ask(
        _ operation: WorkspaceRequest.Operation,
        path: String,
        _ context: GatewayRequestContext,
        body: [UInt8] = [],
        contentType: String = "application/json"
    ) async throws -> Response {
        let user = try context.requirePrincipal().userID
        let id = try ConversationRoutes.conversationID(context)
        guard let path = WorkspacePath.relative(path) else {
            throw APIError.invalidField(
                "the path must stay inside the workspace: relative (no `..`) or under \(WorkspacePath.mount)/"
            )
        }
        if operation == .selectFile, path.isEmpty {
            throw APIError.invalidField("`file` must name a file in the workspace")
        }
        try await store.requireOwner(user, id)
        try bus.requireConnected()
        let request = WorkspaceRequest(conversationID: id, operation: operation, path: path)
        var message = AMQPMessage(body: body)
        message.properties.contentType = contentType
        message.properties.persistent = false
        message.properties.expiration = String(settings.filesTimeout.wholeMilliseconds)
        message.properties.headers[WorkspaceRequest.header] = .string(
            String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
        )
        let reply: AMQPDelivery
        do {
            reply = try await bus.connection.request(
                message,
                exchange: bus.topology.commandsExchange,
                routingKey: bus.topology.workspaceQueue,
                timeout: settings.filesTimeout
            )
        } catch let error as DeckhandError where error.code == .timeout {
            throw APIError(
                .gatewayTimeout,
                .workspaceTimeout,
                "no runtime worker answered within \(settings.filesTimeout)"
            )
        }
        let status = Int(reply.properties.headers[WorkspaceRequest.statusHeader]?.intValue ?? 502)
        return Response(
            status: HTTPResponse.Status(code: status),
            headers: [.contentType: reply.properties.contentType ?? "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: reply.body))
        )
    }
}
