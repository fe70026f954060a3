/// How a sandbox server runs.
public struct SandboxConfiguration: Sendable {
    /// The address to listen on: 127.0.0.1 unless the sandbox must be reached from outside its host.
    public var host: String = "127.0.0.1"
    /// The port to listen on; 0 picks a free one.
    public var port: Int = 8000
    /// Where the shell starts and relative paths resolve: the agent's workspace.
    public var workingDirectory: String = "/workspace"
    /// The user the shell runs as; `nil` keeps the server's own user.
    public var username: String?
    /// The uid for `username` when the server has to create that user.
    public var uid: Int?
    /// The key every request but `/alive` and `/server_info` must carry in `X-Session-API-Key`; `nil` only
    /// with an explicit `--no-auth`.
    public var sessionAPIKey: String?
    /// A running command that prints nothing for this long returns with `exit_code: -1` (soft timeout).
    public var noChangeTimeout: Duration = .seconds(10)
    /// The largest upload accepted (HTTP 413 above it).
    public var maxUploadBytes: Int = 512 << 20

    public init() {}
}
