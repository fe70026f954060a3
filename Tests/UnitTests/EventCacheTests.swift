import DeckhandCore
import Foundation
import Testing

@testable import ConversationWorker

@Suite struct EventCacheTests {
    static func events(_ ids: Range<Int>) -> [StoredEvent] {
        ids.map { id in
            var event = Event.agentMessage("m\(id)", waitForResponse: false)
            event.id = id
            return StoredEvent(event: event, step: id)
        }
    }

    @Test func aConversationIsKeyedByItsCreationToo() {
        let cache = EventCache(capacity: 1000)
        let id = UUID()
        let first = EventCache.Key(conversation: id, created: Date(timeIntervalSince1970: 1))
        cache.keep(Self.events(0..<3), bytes: 30, for: first)
        #expect(cache.events(of: first).map(\.id) == [0, 1, 2])
        let again = EventCache.Key(conversation: id, created: Date(timeIntervalSince1970: 2))
        #expect(cache.events(of: again).isEmpty, "the same id created again is another conversation")
        cache.keep(Self.events(0..<5), bytes: 20, for: first)
        #expect(cache.size.bytes == 50, "bytes add up per conversation as newer events are kept")
    }

    @Test func theLeastRecentlyUsedGoFirstAndAnOversizedOneIsNotKept() {
        let cache = EventCache(capacity: 100)
        let keys = (0..<3).map {
            EventCache.Key(conversation: UUID(), created: Date(timeIntervalSince1970: Double($0)))
        }
        cache.keep(Self.events(0..<1), bytes: 40, for: keys[0])
        cache.keep(Self.events(0..<1), bytes: 40, for: keys[1])
        _ = cache.events(of: keys[0])  // 0 used after 1
        cache.keep(Self.events(0..<1), bytes: 40, for: keys[2])
        #expect(cache.events(of: keys[1]).isEmpty, "the least recently used left")
        #expect(cache.events(of: keys[0]).count == 1)
        #expect(cache.size.bytes == 80 && cache.size.conversations == 2)
        cache.keep(Self.events(0..<9), bytes: 200, for: keys[2])
        #expect(cache.events(of: keys[2]).isEmpty, "one conversation larger than the whole cache is not kept")
        #expect(cache.size.bytes == 40 && cache.size.conversations == 1)
    }
}
