import ArgumentParser
import Foundation
import Logging
import SandboxServer

#if canImport(Glibc)
import Glibc
#endif

/// `deckhand-sandbox`: the action-execution server inside a sandbox (no AMQP, no PostgreSQL).
@main
struct DeckhandSandbox: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deckhand-sandbox",
        abstract: "Serve OpenHands' action-execution protocol: a persistent shell and file tools for one agent.",
        discussion:
            "The session key comes from SESSION_API_KEY; every request but /alive and /server_info must carry it."
    )

    @Option(help: "Port to listen on (0 picks a free one).") var port = 8000
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(name: .customLong("working-dir"), help: "The workspace: where the shell starts.") var workingDirectory =
        "/workspace"
    @Option(help: "Run the shell as this user (created with --uid when missing); default: the server's user.") var user:
        String?
    @Option(help: "The uid for --user when it has to be created.") var uid: Int?
    @Flag(help: "Serve without a session key. Anyone who can reach the port can run commands.") var noAuth = false
    @Option(help: "Seconds without new output before a running command returns (soft timeout).") var noChangeTimeout:
        Int?
    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).") var logLevel = "info"
    @Option(help: "Once listening, write the port to this file (atomically), for whoever started the server.")
    var portFile: String?
    @Flag(
        help: "Once listening, print `deckhand-sandbox port <port>` on standard output (read from a container's log)."
    )
    var announcePort = false
    @Option(
        help:
            "A descriptor to watch: when it reads end-of-file (the process that started the server died), shut down."
    )
    var lifelineFd: Int32?
    @Option(
        help:
            "Read the session key from this file and delete it (instead of SESSION_API_KEY, which the processes of a sandbox could read)."
    )
    var sessionKeyFile: String?
    @Option(
        help:
            "Once the session key is read, run the server (and so the shell) as this user, with no capability left (a container's root starts it)."
    )
    var runAs: String?
    @Option(help: "Cap the processes of the server's user (RLIMIT_NPROC), the shell's included.") var maxProcesses: Int?

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "deckhand.sandbox")
        let environment = ProcessInfo.processInfo.environment
        var configuration = SandboxConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.workingDirectory = workingDirectory
        configuration.username = user
        configuration.uid = uid
        if let seconds = noChangeTimeout ?? environment["NO_CHANGE_TIMEOUT_SECONDS"].flatMap(Int.init) {
            configuration.noChangeTimeout = .seconds(seconds)
        }
        // Before anything else runs here: nothing of this user may read the key from this process.
        try ProcessHardening.protectMemory()
        unsetenv("SESSION_API_KEY")
        if let maxProcesses { try ProcessHardening.limitProcesses(maxProcesses) }
        if let sessionKeyFile {
            configuration.sessionAPIKey = try ProcessHardening.takeSessionKey(from: sessionKeyFile)
        } else if let key = environment["SESSION_API_KEY"], !key.isEmpty {
            configuration.sessionAPIKey = key
        } else if noAuth {
            logger.critical(
                "SERVING WITHOUT A SESSION KEY (--no-auth): anyone who can reach this port can run commands as \(user ?? "this user")"
            )
        } else {
            FileHandle.standardError.write(
                Data(
                    "deckhand-sandbox: SESSION_API_KEY is not set; refusing to start (pass --no-auth to serve without a key)\n"
                        .utf8
                )
            )
            throw ExitCode(2)
        }
        if let runAs { try ProcessHardening.drop(to: runAs) }
        if let lifelineFd {
            Lifeline.watch(descriptor: lifelineFd, logger: logger)
        }
        try await SandboxServer(configuration: configuration, logger: logger).run { [portFile, announcePort] port in
            logger.info("deckhand-sandbox listening on \(host):\(port)")
            if announcePort {
                FileHandle.standardOutput.write(Data("deckhand-sandbox port \(port)\n".utf8))
            }
            if let portFile {
                do {
                    try Data("\(port)\n".utf8).write(to: URL(fileURLWithPath: portFile), options: .atomic)
                } catch {
                    logger.critical("cannot write the port file \(portFile): \(error)")
                    kill(getpid(), SIGTERM)
                }
            }
        }
    }
}

/// Shuts the server down when the process that started it dies: that process keeps the write end of a pipe
/// whose read end is `descriptor` here, and the kernel closes it when that process exits, however it exits.
enum Lifeline {
    static func watch(descriptor: Int32, logger: Logger) {
        let thread = Thread {
            var byte: UInt8 = 0
            while true {
                let count = read(descriptor, &byte, 1)
                if count == 0 || (count < 0 && errno != EINTR) { break }
            }
            logger.notice("the process that started this sandbox is gone (lifeline closed): shutting down")
            kill(getpid(), SIGTERM)
        }
        thread.name = "lifeline"
        thread.start()
    }
}
