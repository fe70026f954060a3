import DeckhandCore

/// Polls `condition` every `interval` until it gives a value, and returns it; after `timeout` fails with a
/// `SERVICE$TIMEOUT` error that says what did not happen (`what`) and, when `describe` is given, how things
/// stood at the last look. The one way tests wait for something to happen.
public func eventuallyValue<T>(
    _ what: String,
    timeout: Duration = .seconds(30),
    interval: Duration = .milliseconds(20),
    describe: (() async -> String)? = nil,
    _ condition: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try await condition() { return value }
        guard ContinuousClock.now < deadline else { break }
        try await Task.sleep(for: interval)
    }
    let state = await describe?() ?? ""
    throw DeckhandError(.timeout, "\(what) did not happen within \(timeout)" + (state.isEmpty ? "" : ": \(state)"))
}

/// ``eventuallyValue(_:timeout:interval:describe:_:)`` for a condition that only holds or not.
public func eventually(
    _ what: String,
    timeout: Duration = .seconds(30),
    interval: Duration = .milliseconds(20),
    describe: (() async -> String)? = nil,
    _ condition: () async throws -> Bool
) async throws {
    _ = try await eventuallyValue(what, timeout: timeout, interval: interval, describe: describe) {
        try await condition() ? true : nil
    }
}
