import CSandboxPTY
import DeckhandCore
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Zip archives for `/upload_file` and `/download_files`, in pure Swift (no `zip`, `unzip` or zlib in the sandbox).
///
/// Reads stored and deflated entries (Zip64 sizes included); writes deflated or stored entries with Unix modes, so
/// executables stay executable and symlinks stay symlinks. Extraction refuses, before writing anything, any entry
/// that would land outside the destination.
public enum Archive {
    // MARK: - Extract

    /// Extracts the zip file at `path` into `destination`; see ``extract(zip:into:)``.
    public static func extract(zipAt path: String, into destination: String) throws -> [String] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw DeckhandError(.fileIOFailed, "Could not read the archive \(path): \(error)", underlying: error)
        }
        return try extract(zip: [UInt8](data), into: destination)
    }

    /// Extracts a zip into `destination` (created if missing) and returns the absolute paths it wrote, in
    /// archive order.
    ///
    /// Every entry is checked first: an absolute name, a `..` that climbs out, or a symlink whose target points
    /// outside rejects the whole archive and nothing is written. Files keep the Unix permission bits stored for
    /// them; an existing symlink at an entry's path is replaced, never written through.
    public static func extract(zip bytes: [UInt8], into destination: String) throws -> [String] {
        let entries = try ZipReader(bytes).entries()
        let plans = try entries.compactMap { try plan($0) }

        let manager = FileManager.default
        do {
            try manager.createDirectory(atPath: destination, withIntermediateDirectories: true)
        } catch {
            throw DeckhandError(.fileIOFailed, "Could not create \(destination): \(error)", underlying: error)
        }
        guard let root = realPath(destination) else {
            throw DeckhandError(.fileNotFound, "The destination \(destination) does not exist.")
        }
        var written: [String] = []
        for (entry, relative) in plans {
            let target = root == "/" ? "/" + relative : root + "/" + relative
            let parent = (target as NSString).deletingLastPathComponent
            do {
                try manager.createDirectory(atPath: parent, withIntermediateDirectories: true)
                guard let realParent = realPath(parent), realParent == root || realParent.hasPrefix(root + "/")
                else {
                    throw DeckhandError(
                        .archiveUnsafeEntry,
                        "The archive entry \(entry.name) would be written outside \(destination) through a symlink."
                    )
                }
                removeIfSymlink(target)
                switch entry.kind {
                case .directory:
                    try manager.createDirectory(atPath: target, withIntermediateDirectories: true)
                case .symlink:
                    let linkTarget = String(decoding: try entry.content(), as: UTF8.self)
                    if manager.fileExists(atPath: target) { try manager.removeItem(atPath: target) }
                    try manager.createSymbolicLink(atPath: target, withDestinationPath: linkTarget)
                case .file:
                    try Data(try entry.content()).write(to: URL(fileURLWithPath: target))
                }
                if entry.kind != .symlink, let mode = entry.mode, mode & 0o777 != 0 {
                    try manager.setAttributes([.posixPermissions: NSNumber(value: mode & 0o7777)], ofItemAtPath: target)
                }
            } catch let error as DeckhandError {
                throw error
            } catch {
                throw DeckhandError(
                    .fileIOFailed,
                    "Could not extract \(entry.name) to \(target): \(error)",
                    underlying: error
                )
            }
            written.append(target)
        }
        return written
    }

    /// The checked relative path of an entry; nil for an entry naming the destination itself (`./`).
    static func plan(_ entry: ZipEntry) throws -> (ZipEntry, String)? {
        guard let relative = safeRelativePath(entry.name) else {
            throw DeckhandError(
                .archiveUnsafeEntry,
                "The archive was rejected and nothing was extracted: its entry `\(entry.name)` would land outside the "
                    + "destination directory."
            )
        }
        if entry.kind == .symlink {
            let target = String(decoding: try entry.content(), as: UTF8.self)
            let directory = (relative as NSString).deletingLastPathComponent
            if target.hasPrefix("/") || safeRelativePath(directory.isEmpty ? target : directory + "/" + target) == nil {
                throw DeckhandError(
                    .archiveUnsafeEntry,
                    "The archive was rejected and nothing was extracted: its symlink `\(entry.name)` points to "
                        + "`\(target)`, outside the destination directory."
                )
            }
        }
        return relative.isEmpty ? nil : (entry, relative)
    }

    /// `name` with `\` taken as `/` and `.`/`..` resolved, if it stays inside its root; "" for the root itself.
    static func safeRelativePath(_ name: String) -> String? {
        let unified = name.replacingOccurrences(of: "\\", with: "/")
        if unified.hasPrefix("/") || unified.contains("\0") { return nil }
        if let first = unified.split(separator: "/").first, first.count == 2, first.hasSuffix(":") { return nil }
        var parts: [Substring] = []
        for part in unified.split(separator: "/") {
            if part == "." { continue }
            if part == ".." {
                guard parts.popLast() != nil else { return nil }
            } else {
                parts.append(part)
            }
        }
        return parts.joined(separator: "/")
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func removeIfSymlink(_ path: String) {
        if let info = FileStatus(path, followSymlink: false), info.kind == S_IFLNK { unlink(path) }
    }

    // MARK: - Zip

    /// A zip of `path`: a file gives an archive holding that file under its own name; a directory gives its
    /// whole tree, entries named relative to it (directories with a trailing `/`, symlinks kept as symlinks).
    public static func zip(path: String) throws -> [UInt8] {
        guard let info = FileStatus(path, followSymlink: true) else {
            throw DeckhandError(.fileNotFound, "Nothing to archive: \(path) does not exist.")
        }
        var writer = ZipWriter()
        if info.kind == S_IFDIR {
            try addTree(at: path, prefix: "", to: &writer)
        } else {
            try add(path, name: (path as NSString).lastPathComponent, to: &writer, followSymlink: true)
        }
        return try writer.finish()
    }

    static func addTree(at directory: String, prefix: String, to writer: inout ZipWriter) throws {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        } catch {
            throw DeckhandError(.fileIOFailed, "Could not list \(directory): \(error)", underlying: error)
        }
        for name in names {
            let full = directory + "/" + name
            guard let info = FileStatus(full, followSymlink: false) else { continue }
            if info.kind == S_IFDIR {
                writer.add(
                    name: prefix + name + "/",
                    mode: info.mode,
                    modified: info.modified,
                    data: []
                )
                try addTree(at: full, prefix: prefix + name + "/", to: &writer)
            } else {
                try add(full, name: prefix + name, to: &writer, followSymlink: false)
            }
        }
    }

    static func add(_ path: String, name: String, to writer: inout ZipWriter, followSymlink: Bool) throws {
        guard let info = FileStatus(path, followSymlink: followSymlink) else { return }
        switch info.kind {
        case S_IFLNK:
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? ""
            writer.add(name: name, mode: info.mode, modified: info.modified, data: Array(target.utf8))
        case S_IFREG:
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: path))
            } catch {
                throw DeckhandError(.fileIOFailed, "Could not read \(path): \(error)", underlying: error)
            }
            writer.add(name: name, mode: info.mode, modified: info.modified, data: [UInt8](data))
        default:
            return  // sockets, FIFOs and devices have no content to archive
        }
    }
}

// MARK: - Reading

/// One entry of a zip's central directory, with a way to get its uncompressed bytes.
struct ZipEntry {
    enum Kind { case file, directory, symlink }

    var name: String
    var kind: Kind
    /// Unix mode bits when the archive was made on Unix.
    var mode: UInt32?
    var method: UInt16
    var flags: UInt16
    var crc: UInt32
    var compressedSize: Int
    var size: Int
    var dataOffset: Int
    var archive: [UInt8]

    /// The entry's bytes, decompressed and checked against its CRC and size.
    func content() throws -> [UInt8] {
        guard flags & 1 == 0 else {
            throw DeckhandError(.archiveMalformed, "The archive entry \(name) is encrypted, which is not supported.")
        }
        guard dataOffset + compressedSize <= archive.count else {
            throw DeckhandError(.archiveMalformed, "The archive is truncated: the entry \(name) ends past its end.")
        }
        let raw = Array(archive[dataOffset..<(dataOffset + compressedSize)])
        let bytes: [UInt8]
        switch method {
        case 0: bytes = raw
        case 8: bytes = try Inflate.decompress(raw, expectedSize: size, limit: size)
        default:
            throw DeckhandError(
                .archiveMalformed,
                "The archive entry \(name) uses compression method \(method); only stored (0) and deflate (8) are "
                    + "supported."
            )
        }
        guard bytes.count == size, CRC32.checksum(bytes) == crc else {
            throw DeckhandError(
                .archiveMalformed,
                "The archive entry \(name) is corrupt (its checksum does not match)."
            )
        }
        return bytes
    }
}

struct ZipReader {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    static func malformed(_ why: String) -> DeckhandError {
        DeckhandError(.archiveMalformed, "The upload is not a readable zip archive: \(why).")
    }

    func u16(_ at: Int) throws -> Int {
        guard at >= 0, at + 2 <= bytes.count else { throw Self.malformed("it is truncated") }
        return Int(bytes[at]) | Int(bytes[at + 1]) << 8
    }

    func u32(_ at: Int) throws -> Int {
        try u16(at) | (try u16(at + 2)) << 16
    }

    func u64(_ at: Int) throws -> Int {
        let value = UInt64(try u32(at)) | UInt64(try u32(at + 4)) << 32
        guard value < UInt64(Int.max) else { throw Self.malformed("a size is out of range") }
        return Int(value)
    }

    func entries() throws -> [ZipEntry] {
        // The end-of-central-directory record sits in the last 22 + 65535 bytes.
        guard bytes.count >= 22 else { throw Self.malformed("it is too short") }
        var end = bytes.count - 22
        let lowest = max(0, bytes.count - 22 - 0xFFFF)
        while end >= lowest, try u32(end) != 0x0605_4b50 { end -= 1 }
        guard end >= lowest else { throw Self.malformed("it has no end-of-central-directory record") }
        var count = try u16(end + 10)
        var directoryOffset = try u32(end + 16)
        // Zip64: the locator just before the record points at the Zip64 record with the real values.
        if end >= 20, try u32(end - 20) == 0x0706_4b50 {
            let record = try u64(end - 20 + 8)
            guard try u32(record) == 0x0606_4b50 else { throw Self.malformed("its Zip64 record is missing") }
            count = try u64(record + 32)
            directoryOffset = try u64(record + 48)
        }
        var entries: [ZipEntry] = []
        var at = directoryOffset
        for _ in 0..<count {
            guard try u32(at) == 0x0201_4b50 else { throw Self.malformed("its central directory is damaged") }
            let madeBy = try u16(at + 4)
            let flags = try u16(at + 8)
            let method = try u16(at + 10)
            let crc = try u32(at + 16)
            var compressedSize = try u32(at + 20)
            var size = try u32(at + 24)
            let nameLength = try u16(at + 28)
            let extraLength = try u16(at + 30)
            let commentLength = try u16(at + 32)
            let external = try u32(at + 38)
            var localOffset = try u32(at + 42)
            guard at + 46 + nameLength <= bytes.count else { throw Self.malformed("it is truncated") }
            let name = String(decoding: bytes[(at + 46)..<(at + 46 + nameLength)], as: UTF8.self)
            // Zip64 extra field: the 64-bit values, in order, for those stored as 0xFFFFFFFF.
            var extra = at + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = try u16(extra)
                let length = try u16(extra + 2)
                if id == 0x0001 {
                    var field = extra + 4
                    if size == 0xFFFF_FFFF {
                        size = try u64(field)
                        field += 8
                    }
                    if compressedSize == 0xFFFF_FFFF {
                        compressedSize = try u64(field)
                        field += 8
                    }
                    if localOffset == 0xFFFF_FFFF { localOffset = try u64(field) }
                }
                extra += 4 + length
            }
            guard try u32(localOffset) == 0x0403_4b50 else {
                throw Self.malformed("an entry's local header is missing")
            }
            let dataOffset = localOffset + 30 + (try u16(localOffset + 26)) + (try u16(localOffset + 28))

            let unixMode = (madeBy >> 8) == 3 ? UInt32(external >> 16) : nil
            let kind: ZipEntry.Kind
            if let unixMode, unixMode & 0o170000 == 0o120000 {
                kind = .symlink
            } else if name.hasSuffix("/") || name.hasSuffix("\\") || external & 0x10 != 0
                || unixMode.map({ $0 & 0o170000 == 0o040000 }) == true
            {
                kind = .directory
            } else {
                kind = .file
            }
            entries.append(
                ZipEntry(
                    name: name,
                    kind: kind,
                    mode: unixMode == 0 ? nil : unixMode,
                    method: UInt16(method),
                    flags: UInt16(flags),
                    crc: UInt32(crc),
                    compressedSize: compressedSize,
                    size: size,
                    dataOffset: dataOffset,
                    archive: bytes
                )
            )
            at += 46 + nameLength + extraLength + commentLength
        }
        return entries
    }
}

// MARK: - Writing

/// Builds a zip of entries made on Unix, deflated when that saves space; refuses what would need Zip64.
struct ZipWriter {
    private var output: [UInt8] = []
    private var directory: [UInt8] = []
    private var count = 0

    mutating func add(name: String, mode: UInt32, modified: Int, data: [UInt8]) {
        let nameBytes = Array(name.utf8)
        let crc = CRC32.checksum(data)
        let (time, date) = Self.dosTime(modified)
        let offset = output.count
        let isDirectory = name.hasSuffix("/")
        // Deflate when it saves space (not for tiny or already compressed data).
        let deflated = data.count > 64 ? Deflate.compress(data) : nil
        let compressed = deflated.flatMap { $0.count < data.count ? $0 : nil }
        let method: UInt16 = compressed == nil ? 0 : 8
        let version: UInt16 = isDirectory || compressed != nil ? 20 : 10
        let stored = compressed ?? data

        var local: [UInt8] = []
        Self.put32(&local, 0x0403_4b50)
        Self.put16(&local, version)  // version needed
        Self.put16(&local, 0x0800)  // UTF-8 names
        Self.put16(&local, method)
        Self.put16(&local, time)
        Self.put16(&local, date)
        Self.put32(&local, crc)
        Self.put32(&local, UInt32(truncatingIfNeeded: stored.count))
        Self.put32(&local, UInt32(truncatingIfNeeded: data.count))
        Self.put16(&local, UInt16(truncatingIfNeeded: nameBytes.count))
        Self.put16(&local, 0)
        output += local
        output += nameBytes
        output += stored

        Self.put32(&directory, 0x0201_4b50)
        Self.put16(&directory, 3 << 8 | 20)  // made by Unix, spec 2.0
        Self.put16(&directory, version)
        Self.put16(&directory, 0x0800)
        Self.put16(&directory, method)
        Self.put16(&directory, time)
        Self.put16(&directory, date)
        Self.put32(&directory, crc)
        Self.put32(&directory, UInt32(truncatingIfNeeded: stored.count))
        Self.put32(&directory, UInt32(truncatingIfNeeded: data.count))
        Self.put16(&directory, UInt16(truncatingIfNeeded: nameBytes.count))
        Self.put16(&directory, 0)  // extra
        Self.put16(&directory, 0)  // comment
        Self.put16(&directory, 0)  // disk
        Self.put16(&directory, 0)  // internal attributes
        Self.put32(&directory, mode << 16 | (isDirectory ? 0x10 : 0))
        Self.put32(&directory, UInt32(truncatingIfNeeded: offset))
        directory += nameBytes
        count += 1
        tooLarge = tooLarge || data.count >= 0xFFFF_FFFF || offset >= 0xFFFF_FFFF || nameBytes.count > 0xFFFF
    }

    private var tooLarge = false

    mutating func finish() throws -> [UInt8] {
        guard !tooLarge, count < 0xFFFF, output.count < 0xFFFF_FFFF else {
            throw DeckhandError(
                .fileTooLarge,
                "Too much to archive: more than 65,534 entries or 4 GB. Download a smaller directory."
            )
        }
        let directoryOffset = output.count
        var archive = output + directory
        Self.put32(&archive, 0x0605_4b50)
        Self.put16(&archive, 0)
        Self.put16(&archive, 0)
        Self.put16(&archive, UInt16(count))
        Self.put16(&archive, UInt16(count))
        Self.put32(&archive, UInt32(directory.count))
        Self.put32(&archive, UInt32(directoryOffset))
        Self.put16(&archive, 0)
        return archive
    }

    static func put16(_ bytes: inout [UInt8], _ value: UInt16) {
        bytes.append(UInt8(value & 0xFF))
        bytes.append(UInt8(value >> 8))
    }

    static func put32(_ bytes: inout [UInt8], _ value: UInt32) {
        put16(&bytes, UInt16(value & 0xFFFF))
        put16(&bytes, UInt16(value >> 16))
    }

    /// MS-DOS time and date of a Unix time, in local time as `zip` writes them (1980 at the earliest).
    static func dosTime(_ seconds: Int) -> (UInt16, UInt16) {
        var time = time_t(seconds)
        var parts = tm()
        guard localtime_r(&time, &parts) != nil, parts.tm_year >= 80 else { return (0, 0x21) }
        let dosTime = UInt16(parts.tm_hour) << 11 | UInt16(parts.tm_min) << 5 | UInt16(parts.tm_sec / 2)
        let dosDate = UInt16(parts.tm_year - 80) << 9 | UInt16(parts.tm_mon + 1) << 5 | UInt16(parts.tm_mday)
        return (dosTime, dosDate)
    }
}

/// A file's type, permission bits and modification time, from `stat`/`lstat`.
struct FileStatus {
    var mode: UInt32
    var modified: Int

    /// The file-type bits (`S_IFDIR`, `S_IFREG`, `S_IFLNK`, …).
    var kind: UInt32 { mode & UInt32(S_IFMT) }

    init?(_ path: String, followSymlink: Bool) {
        var mode: UInt32 = 0
        var modified: Int64 = 0
        guard deckhand_file_status(path, followSymlink ? 1 : 0, &mode, &modified) == 0 else { return nil }
        self.mode = mode
        self.modified = Int(modified)
    }
}
