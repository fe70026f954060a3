import DeckhandCore
import Foundation
import HTTPClient
import Logging
import RuntimeBackends

/// Which backends a runtime worker runs, from the configuration (`runtime.backend`, `docker.socket`, `remote.url`,
/// `modal.token_id`).
public enum BackendSelection {
    /// The backends and the default one:
    /// - `docker`: Docker only; the engine must answer.
    /// - `process`: process sandboxes only.
    /// - `auto`: Docker as the default when `docker.socket` is set and the engine answers, with process
    ///   sandboxes beside it; process sandboxes as the default (Docker beside them) when the engine lacks
    ///   `runtime.image`; process sandboxes only when there is no engine.
    public static func make(
        configuration: DeckhandConfiguration,
        deployment: String,
        http: HTTPClient,
        logger: Logger
    ) async throws -> (backends: [any SandboxBackend], defaultBackend: RuntimeSettings.Backend) {
        let runtime = configuration.runtime
        func docker(_ socket: String) -> DockerBackend {
            DockerBackend(
                socket: socket,
                settings: configuration.docker,
                deployment: deployment,
                advertiseHost: configuration.node.advertiseHost,
                client: http,
                logger: logger
            )
        }
        func process() throws -> ProcessBackend {
            try ProcessBackend(
                root: runtime.workspaceRoot + "/" + deployment,
                binary: runtime.sandboxBinary,
                settings: runtime,
                advertiseHost: configuration.node.advertiseHost,
                logger: logger
            )
        }
        let remote = configuration.remote.url.map { _ in
            RemoteBackend(settings: configuration.remote, deployment: deployment, client: http, logger: logger)
        }
        let modal =
            configuration.modal.isConfigured
            ? ModalBackend(settings: configuration.modal, deployment: deployment, http: http, logger: logger) : nil
        // A Runtime API and Modal are offered beside the local backends whenever they are configured.
        let extra: [any SandboxBackend] = (remote.map { [$0] } ?? []) + (modal.map { [$0] } ?? [])
        switch runtime.backend {
        case .modal:
            guard let modal else {
                throw DeckhandError(
                    .invalidConfiguration,
                    "runtime.backend is modal but modal.token_id is empty (set it, and modal.token_secret, or MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"
                )
            }
            return ([modal] + (remote.map { [$0] } ?? []), .modal)
        case .remote:
            guard let remote else {
                throw DeckhandError(
                    .invalidConfiguration,
                    "runtime.backend is remote but remote.url is empty (set it to the Runtime API's URL)"
                )
            }
            return ([remote] + (modal.map { [$0] } ?? []), .remote)
        case .docker:
            guard let socket = configuration.docker.socket else {
                throw DeckhandError(
                    .invalidConfiguration,
                    "runtime.backend is docker but docker.socket is empty (set it to the Docker Engine API's unix socket)"
                )
            }
            try await ping(socket, http: http)
            return ([docker(socket)] + extra, .docker)
        case .process:
            return ([try process()] + extra, .process)
        case nil:
            if let socket = configuration.docker.socket {
                do {
                    try await ping(socket, http: http)
                    if try await imageExists(runtime.image, socket: socket, http: http) {
                        return ([docker(socket), try process()] + extra, .docker)
                    }
                    logger.warning(
                        "the sandbox image \(runtime.image) is not in the Docker engine: using process sandboxes (deploy/sandbox/build-offline.sh builds it)"
                    )
                    return ([try process(), docker(socket)] + extra, .process)
                } catch {
                    logger.warning(
                        "the Docker engine does not answer: using process sandboxes",
                        metadata: [LogKey.error.rawValue: "\(error)"]
                    )
                }
            }
            return ([try process()] + extra, .process)
        }
    }

    /// Whether the Docker engine has `image`.
    static func imageExists(_ image: String, socket: String, http: HTTPClient) async throws -> Bool {
        let name = image.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? image
        var request = HTTPRequest(method: .get, url: "http://localhost/images/\(name)/json", unixSocketPath: socket)
        request.timeout = .seconds(5)
        return try await http.execute(request).status == 200
    }

    static func ping(_ socket: String, http: HTTPClient) async throws {
        var request = HTTPRequest(method: .get, url: "http://localhost/_ping", unixSocketPath: socket)
        request.timeout = .seconds(5)
        do {
            _ = try await http.execute(request).expectSuccess()
        } catch {
            throw DeckhandError(.unavailable, "the Docker engine at \(socket) does not answer", underlying: error)
        }
    }
}
