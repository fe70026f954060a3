extension Array where Element == UInt8 {
    /// Where `needle` first occurs at or after `start`, if it does (a plain scan: bodies and terminal output
    /// are searched for short delimiters).
    public func firstIndex(of needle: [UInt8], from start: Int) -> Int? {
        guard let first = needle.first, start >= 0, count >= needle.count else { return nil }
        var index = start
        let last = count - needle.count
        while index <= last {
            if self[index] == first && self[index..<(index + needle.count)].elementsEqual(needle) {
                return index
            }
            index += 1
        }
        return nil
    }
}

/// Compares two byte strings in time that depends only on their lengths (for keys and their hashes).
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
    for index in 0..<max(a.count, b.count) {
        let x = index < a.count ? a[index] : 0
        let y = index < b.count ? b[index] : 0
        difference |= x ^ y
    }
    return difference == 0
}
