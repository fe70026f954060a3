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
