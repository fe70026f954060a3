import ArgumentParser
import DeckhandCore
import Foundation
import Logging

/// Options every subcommand shares: where the configuration is.
struct GlobalOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "Configuration file (default: $DECKHAND_CONFIG, else ./config/deckhand.conf if it exists)."
    )
    var config: String?

    /// Reads the configuration file and the environment; a bad value ends the program with the key named.
    func loadConfiguration() throws -> DeckhandConfiguration {
        let environment = ProcessInfo.processInfo.environment
        let explicit = config ?? environment["DECKHAND_CONFIG"]
        let path = explicit ?? "config/deckhand.conf"
        var contents: String?
        if FileManager.default.fileExists(atPath: path) {
            do {
                contents = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw fail("cannot read the configuration file \(path): \(error.localizedDescription)")
            }
        } else if explicit != nil {
            throw fail("the configuration file \(path) does not exist")
        }
        do {
            let reader = try ConfigurationReader(
                fileContents: contents,
                fileName: path,
                environment: environment
            )
            let configuration = try DeckhandConfiguration(reader: reader)
            bootstrapLogging(level: configuration.log.level)
            return configuration
        } catch {
            throw fail(error.message)
        }
    }

    private func fail(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("deckhand: configuration error: \(message)\n".utf8))
        return ExitCode(2)
    }
}

private func bootstrapLogging(level: String) {
    let logLevel = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = logLevel
        return handler
    }
}
