import HTTPClient

/// Asks a sandbox's server whether it answers (in a file of its own: Hummingbird's `HTTPRequest` is another type).
enum SandboxProbe {
    /// Whether the server at `url` answers `/alive` within a second: a row may still say `running` of a server
    /// that died, until the runtime workers handle the provision `/start` sent.
    static func answersAlive(_ url: String, http: HTTPClient) async -> Bool {
        var request = HTTPRequest(method: .get, url: url + "/alive")
        request.timeout = .seconds(1)
        return (try? await http.execute(request))?.status == 200
    }
}
