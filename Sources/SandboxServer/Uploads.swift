import DeckhandCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOPosix

/// `/upload_file` and `/download_files`.
enum Uploads {
    /// `POST /upload_file?destination=<dir>&recursive=<bool>` with a multipart `file`: a zip (or any
    /// file with `recursive=true`) is extracted into the destination, anything else is written into it. A
    /// relative destination (Deckhand's gateway sends them) is inside the workspace.
    static func receive(_ request: Request, state: SandboxState) async throws -> Response {
        let query = request.uri.queryParameters
        guard let given = query["destination"].map(String.init) else {
            return SandboxHTTP.detail("`destination` (a directory path) is required", status: .badRequest)
        }
        let destination = state.inWorkspace(given)
        let recursive = query["recursive"].map { ["true", "1", "yes"].contains($0.lowercased()) } ?? false
        let limit = state.configuration.maxUploadBytes
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            return tooLarge(limit)
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            return tooLarge(limit)
        }
        let form: MultipartFormData
        do {
            form = try MultipartFormData(contentType: request.headers[.contentType] ?? "", body: Array(buffer: body))
        } catch {
            return SandboxHTTP.detail(error.message, status: .badRequest)
        }
        guard let file = form.part(named: "file"), let filename = file.filename, !filename.isEmpty else {
            return SandboxHTTP.detail("the form has no `file` part with a file name", status: .badRequest)
        }
        let name = (filename as NSString).lastPathComponent
        guard name != "..", name != "." else {
            return SandboxHTTP.detail("`\(filename)` is not a usable file name", status: .badRequest)
        }
        do {
            // Writing (and inflating) up to the upload limit is blocking work: off the cooperative pool.
            try await NIOThreadPool.singleton.runIfActive {
                try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: true)
                if recursive || name.lowercased().hasSuffix(".zip") {
                    _ = try Archive.extract(zip: file.body, into: destination)
                } else {
                    let target = (destination as NSString).appendingPathComponent(name)
                    try Data(file.body).write(to: URL(fileURLWithPath: target))
                }
            }
        } catch let error as DeckhandError {
            return SandboxHTTP.detail(error.message, status: .badRequest)
        } catch {
            return SandboxHTTP.detail(
                "cannot store the upload in \(destination): \(error.localizedDescription)",
                status: .internalServerError
            )
        }
        state.logger.debug("upload stored", metadata: [LogKey.upload.rawValue: "\(name) → \(destination)"])
        return SandboxHTTP.json([
            "filename": .string(name), "destination": .string(destination), "recursive": .bool(recursive),
        ])
    }

    /// `GET /download_files?path=<path>`: a zip of the file or the tree (a relative path is in the workspace).
    static func download(_ request: Request, state: SandboxState) async throws -> Response {
        guard let given = request.uri.queryParameters["path"].map(String.init) else {
            return SandboxHTTP.detail("`path` is required", status: .badRequest)
        }
        let path = state.inWorkspace(given)
        guard FileManager.default.fileExists(atPath: path) else {
            return SandboxHTTP.detail("File not found: \(path)", status: .notFound)
        }
        let zip: [UInt8]
        do {
            // Reading and deflating a whole tree is blocking work: off the cooperative pool.
            zip = try await NIOThreadPool.singleton.runIfActive { try Archive.zip(path: path) }
        } catch let error as DeckhandError {
            return SandboxHTTP.detail(error.message, status: .internalServerError)
        }
        let name =
            ((path as NSString).lastPathComponent.isEmpty ? "root" : (path as NSString).lastPathComponent) + ".zip"
        return Response(
            status: .ok,
            headers: [.contentType: "application/zip", .contentDisposition: "attachment; filename=\"\(name)\""],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: zip))
        )
    }

    private static func tooLarge(_ limit: Int) -> Response {
        SandboxHTTP.detail("the upload is larger than the limit of \(limit) bytes", status: .contentTooLarge)
    }
}
