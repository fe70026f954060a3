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
