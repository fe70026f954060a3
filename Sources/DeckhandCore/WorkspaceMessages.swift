import Foundation

/// A request for a conversation's workspace files, from a gateway to the runtime workers over AMQP
/// request/reply (`workspace.requests`, direct reply-to). The JSON is in the `x-workspace-request` header;
/// an upload's multipart body is the message body (its `Content-Type` the message's content type).
///
/// The reply carries the HTTP status for the client in `x-status`, and the body and content type to answer.
public struct WorkspaceRequest: Codable, Sendable, Equatable {
    public enum Operation: String, Codable, Sendable {
        /// `path` (a directory, relative to the workspace; empty: its root) → a JSON array of names, directories
        /// first (`dir/`).
        case listFiles = "list_files"
        /// `path` (a file) → `{"code": <its text>}`; 415 for a binary file.
        case selectFile = "select_file"
        /// The body's multipart `files` parts, into `path` (a directory; empty: the root) →
        /// `{"uploaded_files": […], "skipped_files": [{"name", "reason"}]}`.
        case uploadFiles = "upload_files"
        /// `path` (empty: the workspace) → `application/zip`.
        case zipDirectory = "zip_directory"
    }

    public var conversationID: UUID
    public var operation: Operation
    public var path: String

    public init(conversationID: UUID, operation: Operation, path: String = "") {
        self.conversationID = conversationID
        self.operation = operation
        self.path = path
    }

    /// The message header that carries the request.
    public static let header = "x-workspace-request"
    /// The reply header that carries the HTTP status.
    public static let statusHeader = "x-status"

    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
        case operation, path
    }
}

/// The paths users give the workspace routes: inside the workspace, or refused. A sandbox confines its own
/// server, but a request must not even ask it for `/proc/…/environ`, `/home/…` or `../../…`.
public enum WorkspacePath {
    /// Where OpenHands' sandboxes (and Deckhand's Docker and isolated process sandboxes) mount the workspace;
    /// clients send paths under it as well as relative ones.
    public static let mount = "/workspace"

    /// `path` relative to the workspace, with `.` and empty components removed (`""` for its root); nil when it
    /// leaves the workspace: absolute outside `/workspace`, a `..` component, a NUL, or over 4,096 bytes.
    public static func relative(_ path: String) -> String? {
        guard path.utf8.count <= 4096, !path.contains("\0") else { return nil }
        var rest = Substring(path)
        if rest.hasPrefix("/") {
            guard rest == Substring(mount) || rest.hasPrefix(mount + "/") else { return nil }
            rest = rest.dropFirst(mount.count)
        }
        var parts: [Substring] = []
        for part in rest.split(separator: "/", omittingEmptySubsequences: true) where part != "." {
            if part == ".." { return nil }
            parts.append(part)
        }
        return parts.joined(separator: "/")
    }
}
