#if canImport(Glibc)
import Glibc
#endif

/// Calls `body` with a NULL-terminated array of C strings (`char *const argv[]`), valid during the call:
/// argument vectors, environments, keyword lists of C APIs.
public func withCStringArray<R>(
    _ strings: [String],
    _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) throws -> R
) rethrows -> R {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { for pointer in pointers { free(pointer) } }
    return try pointers.withUnsafeBufferPointer { try body($0.baseAddress!) }
}

/// ``withCStringArray(_:_:)`` for C APIs that take `const char *const *`.
public func withConstCStringArray<R>(
    _ strings: [String],
    _ body: (UnsafePointer<UnsafePointer<CChar>?>) throws -> R
) rethrows -> R {
    try withCStringArray(strings) { pointers in
        try pointers.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: strings.count + 1, body)
    }
}
