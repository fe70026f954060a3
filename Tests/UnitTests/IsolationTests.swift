import DeckhandCore
import Testing

@testable import RuntimeBackends

/// The pure parts of sandbox isolation: workspace paths, the jail's command and what it reads from `ldd`.
@Suite struct IsolationTests {
    @Test(arguments: [
        ("", ""), (".", ""), ("src", "src"), ("src/./main.py", "src/main.py"), ("a//b/", "a/b"),
        ("/workspace", ""), ("/workspace/src/x.py", "src/x.py"), ("/workspace/", ""),
    ])
    func pathsInsideTheWorkspaceAreKept(path: String, relative: String) {
        #expect(WorkspacePath.relative(path) == relative)
    }

    @Test(arguments: [
        "/etc/shadow", "/proc/self/environ", "/home", "/root", "..", "../x", "a/../../b", "src/..", "/workspace/..",
        "/workspace/../etc", "/workspacex/a", "a\0b", String(repeating: "a/", count: 2100),
    ])
    func pathsThatLeaveTheWorkspaceAreRefused(path: String) {
        #expect(WorkspacePath.relative(path) == nil)
    }

    @Test func libraryFoldersOutsideUsrAreReadFromLdd() {
        let ldd = """
            \tlinux-vdso.so.1 (0x00007ffd6a3f2000)
            \tlibswiftCore.so => /opt/swift/usr/lib/swift/linux/libswiftCore.so (0x00007f9a8c200000)
            \tlibFoundation.so => /opt/swift/usr/lib/swift/linux/libFoundation.so (0x00007f9a8ba00000)
            \tlibcurl.so.4 => /lib/x86_64-linux-gnu/libcurl.so.4 (0x00007f9a8b900000)
            \tlibc.so.6 => /usr/lib/x86_64-linux-gnu/libc.so.6 (0x00007f9a8b700000)
            \tlibmine.so => /srv/libs/libmine.so (0x00007f9a8b600000)
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f9a8df6c000)
            """
        #expect(ProcessJail.parseLibraryFolders(ldd) == ["/opt/swift/usr/lib/swift/linux", "/srv/libs"])
    }

    @Test func theJailHidesTheHostAndDropsToTheSandboxUID() {
        let jail = ProcessJail(
            bubblewrap: "/usr/bin/bwrap",
            separateUIDs: true,
            binary: "/srv/sandboxes/.bin/deckhand-sandbox-1-2",
            libraryFolders: ["/opt/swift/usr/lib/swift/linux"],
            tmpBytes: 1 << 20,
            maxProcesses: 64,
            systemFiles: SystemFiles(root: "/srv/sandboxes")
        )
        let paths = ProcessBackend.Paths(folder: "/srv/sandboxes/abc")
        let etc = "/srv/sandboxes/.system/etc-1f"
        let command = jail.command(folder: paths, etc: etc, serverArguments: ["--port", "0"])
        #expect(command.first == "/usr/bin/bwrap", "the uid is dropped by the spawn, not by a helper")
        for flag in ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--disable-userns", "--new-session"] {
            #expect(command.contains(flag), "\(flag)")
        }
        let text = command.joined(separator: " ")
        #expect(text.contains("--ro-bind /usr /usr"))
        #expect(text.contains("--bind /srv/sandboxes/abc/workspace /workspace"))
        #expect(text.contains("--bind /srv/sandboxes/abc/run /run/deckhand"))
        #expect(text.contains("--ro-bind \(etc) /etc"), "one staged /etc")
        #expect(!text.contains("--ro-bind-try"), "no bind per /etc entry")
        #expect(text.contains("--remount-ro /"))
        #expect(!text.contains("--share-net") && !text.contains(" / / "), "the host's root is never bound")
        #expect(
            Array(command.suffix(8)) == [
                "--port", "0", "--working-dir", "/workspace", "--session-key-file", "/run/deckhand/session-key",
                "--max-processes", "64",
            ]
        )
        let environment = jail.environment(["SESSION_API_KEY": "leak", "GREETING": "hi"])
        #expect(environment["SESSION_API_KEY"] == nil)
        #expect(environment["GREETING"] == "hi")
        #expect(environment["HOME"] == "/home/sandbox")
    }
}
