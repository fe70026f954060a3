import DeckhandCore
import Foundation
import Testing

@Suite struct ConfigurationFileTests {
    /// The shipped file documents every key, and its values are the defaults.
    @Test func theShippedFileListsEveryKeyWithItsDefault() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("config/deckhand.conf").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let reader = try ConfigurationReader(fileContents: text)
        #expect(Set(reader.fileKeys) == DeckhandConfiguration.knownKeys)
        let fromFile = try DeckhandConfiguration(reader: reader)
        let defaults = DeckhandConfiguration()
        #expect(fromFile.amqp.url == defaults.amqp.url)
        #expect(fromFile.amqp.heartbeat == defaults.amqp.heartbeat)
        #expect(fromFile.amqp.publishTimeout == defaults.amqp.publishTimeout)
        #expect(fromFile.amqp.confirmWindow == defaults.amqp.confirmWindow)
        #expect(fromFile.amqp.prefetch == defaults.amqp.prefetch)
        #expect(fromFile.amqp.reconnectMin == defaults.amqp.reconnectMin)
        #expect(fromFile.amqp.reconnectMax == defaults.amqp.reconnectMax)
        #expect(fromFile.postgres.url == defaults.postgres.url)
        #expect(fromFile.postgres.poolSize == defaults.postgres.poolSize)
        #expect(fromFile.postgres.acquireTimeout == defaults.postgres.acquireTimeout)
        #expect(fromFile.docker.socket == defaults.docker.socket)
        #expect(fromFile.log.level == defaults.log.level)
    }
}
