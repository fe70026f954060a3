import DeckhandCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where the test services answer, and helpers every integration test shares.
///
/// The URLs come from the same `DECKHAND_*` variables that `deploy/local/services.sh env` prints, with the
/// script's defaults, so a test run after `deploy/local/services.sh start` needs no set-up.
public enum TestEnvironment {
    private static var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// The RabbitMQ the integration tests use.
    public static var amqpURL: String {
        environment["DECKHAND_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
    }

    /// The PostgreSQL database the integration tests use (each test works in its own schema).
    public static var postgresURL: String {
        environment["DECKHAND_POSTGRES_URL"] ?? "postgresql://deckhand:deckhand@127.0.0.1:5432/deckhand"
    }

    /// The Docker Engine API socket the integration tests use.
    public static var dockerSocket: String {
        environment["DECKHAND_DOCKER_SOCKET"] ?? repositoryRoot + "/.deckhand/docker/docker.sock"
    }

    /// The root of this repository (where `Package.swift` is).
    public static var repositoryRoot: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }

    /// An executable a script of this repository makes and `scripts/test.sh` exports in `variable` (OpenHands'
    /// Python, Schemathesis); fails, naming the script, when the variable does not name an executable.
    public static func tool(_ variable: String, madeBy script: String) throws -> String {
        guard let path = environment[variable], !path.isEmpty, FileManager.default.isExecutableFile(atPath: path)
        else {
            throw DeckhandError(
                .unavailable,
                "\(variable) does not name an executable: run `export \(variable)=$(\(script) | tail -n 1)` "
                    + "(scripts/test.sh does)"
            )
        }
        return path
    }

    /// A name no other test uses: `prefix-` followed by 12 random hex digits.
    public static func uniqueName(_ prefix: String) -> String {
        let suffix = UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        return "\(prefix)-\(suffix)"
    }

    /// The error an integration test fails with when a service it needs does not answer.
    public static func serviceMissing(_ service: String, at endpoint: String, _ error: any Error) -> DeckhandError {
        DeckhandError(
            .unavailable,
            "\(service) is not reachable at \(endpoint) (\(error)). Start the local services with "
                + "`deploy/local/services.sh start` (or run `scripts/test.sh`, which starts them)."
        )
    }

    /// Runs a program from the repository root and returns its output (stdout and stderr); fails when it
    /// exits non-zero.
    @discardableResult
    public static func run(_ executable: String, _ arguments: String...) throws -> String {
        try checked(executable, arguments, launch(executable, arguments))
    }

    /// ``run(_:_:)`` on its own thread, so a test's cooperative threads never wait for the child process.
    @discardableResult
    public static func runDetached(_ executable: String, _ arguments: [String]) async throws -> String {
        try checked(executable, arguments, await launchDetached(executable, arguments))
    }

    /// Runs a program on its own thread with extra environment variables and returns its exit status and
    /// output, whatever the status.
    public static func launchDetached(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String] = [:],
        directory: String = repositoryRoot
    ) async throws -> (status: Int32, output: String) {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(
                    with: Result { try launch(executable, arguments, environment: environment, directory: directory) }
                )
            }
            thread.start()
        }
    }

    private static func launch(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String] = [:],
        directory: String = repositoryRoot
    ) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(
            fileURLWithPath: executable.hasPrefix("/") ? executable : repositoryRoot + "/" + executable
        )
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        return (reap(process), String(decoding: data, as: UTF8.self))
    }

    /// Waits for the child with `waitpid` and returns its exit status (128 + the signal when one ended it).
    /// Foundation's `waitUntilExit` was seen to wait for good for a script whose own children (daemons it
    /// started, in their own sessions) outlived it.
    private static func reap(_ process: Process) -> Int32 {
        var status: Int32 = 0
        while waitpid(process.processIdentifier, &status, 0) == -1 {
            guard errno == EINTR else {
                // Foundation reaped it first: it knows the status.
                process.waitUntilExit()
                return process.terminationStatus
            }
        }
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + status & 0x7f
    }

    private static func checked(
        _ executable: String,
        _ arguments: [String],
        _ result: (status: Int32, output: String)
    )
        throws -> String
    {
        guard result.status == 0 else {
            throw DeckhandError(
                .internalError,
                "\(executable) \(arguments.joined(separator: " ")) exited \(result.status): \(result.output)"
            )
        }
        return result.output
    }
}
