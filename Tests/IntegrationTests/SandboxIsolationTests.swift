import DeckhandCore
import DeckhandStore
import DeckhandTesting
import Foundation
import HTTPClient
import RuntimeManager
import Testing

@testable import RuntimeBackends

#if canImport(Glibc)
import Glibc
#endif

/// What code inside a sandbox can reach (issue "Sandbox isolation"): each probe runs as the agent's shell
/// would run it, and prints `DENIED` when the platform held, `BREACH …` when it did not.
@Suite struct SandboxIsolationTests {
    /// One attempt from inside a sandbox.
    struct Probe: Sendable {
        var name: String
        var command: String
    }

    /// Logs into PostgreSQL (cleartext, MD5 or SCRAM-SHA-256) or RabbitMQ (AMQP 0-9-1, PLAIN) with a user and
    /// password: `python3 login.py postgres|rabbitmq PORT USER PASSWORD` prints `BREACH …` when it got in.
    static let loginScript = #"""
        import base64, hashlib, hmac, os, socket, struct, sys

        def recvn(s, n):
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data

        def postgres(host, port, user, password):
            s = socket.create_connection((host, port), timeout=3)
            params = b"user\0" + user.encode() + b"\0database\0deckhand\0\0"
            s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
            def message():
                kind = recvn(s, 1)
                length = struct.unpack("!I", recvn(s, 4))[0]
                return kind, recvn(s, length - 4)
            def send(kind, body):
                s.sendall(kind + struct.pack("!I", len(body) + 4) + body)
            nonce = base64.b64encode(os.urandom(18)).decode()
            bare = "n=,r=" + nonce
            while True:
                kind, body = message()
                if kind == b"E":
                    return False
                if kind != b"R":
                    continue
                code = struct.unpack("!I", body[:4])[0]
                if code == 0:
                    return True
                if code == 3:
                    send(b"p", password.encode() + b"\0")
                elif code == 5:
                    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                    send(b"p", b"md5" + hashlib.md5(inner.encode() + body[4:8]).hexdigest().encode() + b"\0")
                elif code == 10:
                    first = ("n,," + bare).encode()
                    send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
                elif code == 11:
                    server_first = body[4:].decode()
                    fields = dict(item.split("=", 1) for item in server_first.split(","))
                    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
                    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                    stored = hashlib.sha256(client_key).digest()
                    without_proof = "c=biws,r=" + fields["r"]
                    signature = hmac.new(stored, (bare + "," + server_first + "," + without_proof).encode(), hashlib.sha256).digest()
                    proof = bytes(a ^ b for a, b in zip(client_key, signature))
                    send(b"p", (without_proof + ",p=" + base64.b64encode(proof).decode()).encode())
                elif code == 12:
                    continue
                else:
                    return False

        def rabbitmq(host, port, user, password):
            s = socket.create_connection((host, port), timeout=3)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            def frame():
                kind, channel, size = struct.unpack("!BHI", recvn(s, 7))
                payload = recvn(s, size)
                recvn(s, 1)
                return kind, payload
            kind, payload = frame()
            if struct.unpack("!HH", payload[:4]) != (10, 10):
                return False
            response = ("\0" + user + "\0" + password).encode()
            args = struct.pack("!I", 0) + bytes([5]) + b"PLAIN" + struct.pack("!I", len(response)) + response + bytes([5]) + b"en_US"
            body = struct.pack("!HH", 10, 11) + args
            s.sendall(struct.pack("!BHI", 1, 0, len(body)) + body + b"\xce")
            kind, payload = frame()
            return struct.unpack("!HH", payload[:4]) == (10, 30)

        def gateway():
            # The default route's next hop: the host, seen from a sandbox on a bridge network.
            try:
                for line in open("/proc/net/route").read().splitlines()[1:]:
                    fields = line.split()
                    if fields[1] == "00000000":
                        return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
            except OSError:
                pass
            return None

        service, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        for host in ["127.0.0.1"] + [address for address in [gateway()] if address and address != "0.0.0.0"]:
            try:
                ok = (postgres if service == "postgres" else rabbitmq)(host, port, user, password)
            except Exception as error:
                ok = False
            print(("BREACH" if ok else "DENIED") + " " + service + " " + user + " at " + host)
        """#

    /// Users and passwords anyone would try: none, the names, the old local defaults.
    static let guessedLogins: [(service: String, user: String, password: String)] = [
        ("postgres", "deckhand", ""), ("postgres", "deckhand", "deckhand"), ("postgres", "postgres", ""),
        ("postgres", "postgres", "postgres"), ("rabbitmq", "guest", "guest"), ("rabbitmq", "deckhand", "deckhand"),
        ("rabbitmq", "deckhand", ""),
    ]

    /// The probe that tries `logins` on the test services' ports.
    static func loginProbe(_ logins: [(service: String, user: String, password: String)]) -> Probe {
        let ports = [
            "postgres": URLComponents(string: TestEnvironment.postgresURL)?.port ?? 5432,
            "rabbitmq": URLComponents(string: TestEnvironment.amqpURL)?.port ?? 5672,
        ]
        let attempts = logins.map { login in
            "python3 /tmp/login.py \(login.service) \(ports[login.service] ?? 0) '\(login.user)' '\(login.password)'"
        }
        return Probe(
            name: "PostgreSQL and RabbitMQ refuse every login a sandbox can make",
            command: "cat > /tmp/login.py <<'PY'\n\(loginScript)\nPY\n" + attempts.joined(separator: "\n")
                + "\nrm -f /tmp/login.py\necho DENIED"
        )
    }

    /// The probes every backend must pass. `other` is the host path of another sandbox's workspace, holding
    /// `other-secret.txt`.
    static func probes(otherWorkspace: String, repository: String, dockerSocket: String) -> [Probe] {
        [
            loginProbe(guessedLogins),
            Probe(
                name: "the session key is not in the shell's environment",
                command: #"env | grep -q '^SESSION_API_KEY=' && echo BREACH || echo DENIED"#
            ),
            Probe(
                name: "no process's environment shows a platform variable",
                command: #"""
                    found=$(for f in /proc/[0-9]*/environ; do { tr '\0' '\n' < "$f"; } 2>/dev/null; done | grep -E '^(SESSION_API_KEY|DECKHAND_[A-Z_]+)=' | cut -d= -f1 | sort -u | tr '\n' ' ')
                    [ -n "$found" ] && echo "BREACH $found" || echo DENIED
                    """#
            ),
            Probe(
                name: "the host's processes are not visible",
                command: #"""
                    seen=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -E '^(postgres|beam\.smp|dockerd|containerd|deckhand|swift-test|deckhandPackage.*|xctest|systemd|init)$' | sort -u | tr '\n' ' ')
                    [ -n "$seen" ] && echo "BREACH $seen" || echo DENIED
                    """#
            ),
            Probe(
                name: "/etc/shadow cannot be read",
                command: #"cat /etc/shadow >/dev/null 2>&1 && echo BREACH || echo DENIED"#
            ),
            Probe(
                name: "/root cannot be listed",
                command: #"ls /root >/dev/null 2>&1 && echo BREACH || echo DENIED"#
            ),
            Probe(
                name: "no Docker socket is reachable",
                command: """
                    for s in /var/run/docker.sock /run/docker.sock '\(dockerSocket)'; do [ -S "$s" ] && echo "BREACH $s"; done
                    found=$(timeout 5 find / -path /proc -prune -o -path /sys -prune -o -path /usr -prune -o -type s -name '*docker*' -print 2>/dev/null | head -3)
                    [ -n "$found" ] && echo "BREACH $found"
                    echo DENIED
                    """
            ),
            Probe(
                name: "another sandbox's workspace cannot be read",
                command: """
                    cat '\(otherWorkspace)/other-secret.txt' 2>/dev/null && echo BREACH
                    ls '\(otherWorkspace)' >/dev/null 2>&1 && echo BREACH-LIST
                    found=$(timeout 5 find / -path /proc -prune -o -path /sys -prune -o -path /usr -prune -o -name other-secret.txt -print 2>/dev/null | head -3)
                    [ -n "$found" ] && echo "BREACH $found"
                    echo DENIED
                    """
            ),
            Probe(
                name: "the host's files outside the image are not visible",
                command: """
                    [ -e '\(repository)/Package.swift' ] && echo "BREACH repository"
                    for d in /work /var/lib/postgresql /var/lib/rabbitmq /var/lib/deckhand; do [ -e "$d" ] && echo "BREACH $d"; done
                    echo DENIED
                    """
            ),
            Probe(
                name: "the system is read-only",
                command: #"""
                    for f in /usr/bin/deckhand-probe /etc/deckhand-probe /deckhand-probe /opt/deckhand/deckhand-probe; do
                      (echo x > "$f") 2>/dev/null && echo "BREACH $f" && rm -f "$f"
                    done
                    echo DENIED
                    """#
            ),
        ]
    }

    /// Runs every probe in `sandbox` and returns what each printed.
    static func attempt(
        _ sandbox: SandboxReady,
        runtime: TestRuntime,
        otherWorkspace: String
    ) async throws -> [(probe: Probe, output: String)] {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let probes = Self.probes(
            otherWorkspace: otherWorkspace,
            repository: repository,
            dockerSocket: TestEnvironment.dockerSocket
        )
        var results: [(probe: Probe, output: String)] = []
        for probe in probes {
            // One command line, as the shell takes one command per call.
            let script = Data(probe.command.utf8).base64EncodedString()
            results.append((probe, try await runtime.run("echo \(script) | base64 -d | bash", in: sandbox)))
        }
        return results
    }

    /// Runs every probe in `sandbox` and checks each printed `DENIED` and nothing that says `BREACH`.
    static func expectContained(
        _ sandbox: SandboxReady,
        runtime: TestRuntime,
        otherWorkspace: String
    ) async throws {
        for (probe, output) in try await attempt(sandbox, runtime: runtime, otherWorkspace: otherWorkspace) {
            #expect(
                output.contains("DENIED") && !output.contains("BREACH"),
                "\(sandbox.backend) sandbox: \(probe.name): \(output)"
            )
        }
    }

    /// Two sandboxes of `backend`; the first holds `other-secret.txt` in its workspace, for the second to try.
    static func pair(
        _ runtime: TestRuntime,
        backend: RuntimeSettings.Backend? = nil
    ) async throws -> (SandboxReady, SandboxReady) {
        let first = UUID()
        let second = UUID()
        try await runtime.provision(first, backend: backend)
        try await runtime.provision(second, backend: backend)
        let a = try #require(try await runtime.reply(for: first).ready, "a sandbox")
        let b = try #require(try await runtime.reply(for: second).ready, "a sandbox")
        _ = try await runtime.run("echo the-secret-of-a > other-secret.txt", in: a)
        return (a, b)
    }

    @Test func aProcessSandboxReachesOnlyItsWorkspace() async throws {
        try await TestRuntime.with { runtime in
            let worker = try runtime.makeWorker()
            try await running(worker) {
                let (a, b) = try await Self.pair(runtime)
                let folderA = try #require(try await runtime.store.sandbox(id: a.sandboxID)?.reference)
                #expect(
                    FileManager.default.fileExists(atPath: folderA + "/workspace/other-secret.txt"),
                    "the probe's target exists on the host"
                )
                try await Self.expectContained(b, runtime: runtime, otherWorkspace: folderA + "/workspace")

                // Work still works: the workspace and /tmp are writable, the tools are there.
                let work = try await runtime.run(
                    "pwd; echo ok > here.txt && cat here.txt; echo t > /tmp/t && cat /tmp/t; git --version | cut -c1-3; python3 -c 'print(6*7)'",
                    in: b
                )
                #expect(work.contains("/workspace"))
                #expect(work.contains("ok\nt\ngit\n42"), "\(work)")
                if geteuid() == 0 {
                    let uidA = try await runtime.run("id -u", in: a).trimmingCharacters(in: .whitespacesAndNewlines)
                    let uidB = try await runtime.run("id -u", in: b).trimmingCharacters(in: .whitespacesAndNewlines)
                    #expect(uidA != "0" && uidB != "0" && uidA != uidB, "uids \(uidA) and \(uidB)")
                    // The spawn dropped every id: the group is the uid's own and no other is kept.
                    let groups = try await runtime.run("id -g; id -G; id -un", in: b)
                    #expect(groups.trimmingCharacters(in: .whitespacesAndNewlines) == "\(uidB)\n\(uidB)\nsandbox")
                }
            }
        }
    }

    /// The `/etc` of process sandboxes is one staged copy of what every user may read of the host's entries:
    /// the same bytes, no private key, accounts linked to the sandbox's own, staged again only when the host's
    /// entries change.
    @Test func processSandboxesSeeAStagedCopyOfEtc() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("etc-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let files = SystemFiles(root: root)
        let etc = try files.etc()
        #expect(etc.hasPrefix(root + "/.system/etc-"))
        #expect(try files.etc() == etc, "looked at again within two seconds: the same copy")
        #expect(try SystemFiles(root: root).etc() == etc, "the same host entries: the same folder")
        for entry in ["hosts", "nsswitch.conf", "ld.so.cache"] {
            let host = FileManager.default.contents(atPath: "/etc/" + entry)
            #expect(host == nil || FileManager.default.contents(atPath: etc + "/" + entry) == host, "\(entry) as it is")
        }
        #expect(!FileManager.default.fileExists(atPath: etc + "/ssl/private"), "never a private key")
        #expect(!FileManager.default.fileExists(atPath: etc + "/shadow"))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: etc + "/passwd") == "/run/deckhand/passwd")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: etc + "/group") == "/run/deckhand/group")
        if let certificates = try? FileManager.default.contentsOfDirectory(atPath: "/etc/ssl/certs") {
            let copied = try FileManager.default.contentsOfDirectory(atPath: etc + "/ssl/certs")
            #expect(Set(copied) == Set(certificates), "links are copied as links")
        }
    }

    /// The probes can fail: in an unconfined process sandbox (`runtime.process_isolation = none`, the old
    /// default) they see the host's processes, another sandbox's files and the repository.
    @Test func theProbesCatchAnUnconfinedSandbox() async throws {
        try await TestRuntime.with { runtime in
            let worker = try runtime.makeWorker(settings: TestRuntime.settings { $0.processIsolation = .none })
            try await running(worker) {
                let (a, b) = try await Self.pair(runtime)
                let folderA = try #require(try await runtime.store.sandbox(id: a.sandboxID)?.reference)
                let results = try await Self.attempt(b, runtime: runtime, otherWorkspace: folderA + "/workspace")
                let breached = Set(results.filter { $0.output.contains("BREACH") }.map(\.probe.name))
                for name in [
                    "the host's processes are not visible", "another sandbox's workspace cannot be read",
                    "the host's files outside the image are not visible", "/etc/shadow cannot be read",
                    "no process's environment shows a platform variable",
                ] {
                    #expect(breached.contains(name), "unconfined, \(name) should have been breached: \(results)")
                }
                // The login probe gets in when it is given the real credentials (which no sandbox has).
                guard let postgres = URLComponents(string: TestEnvironment.postgresURL),
                    let amqp = URLComponents(string: TestEnvironment.amqpURL)
                else { throw DeckhandError(.invalidConfiguration, "the test services' URLs do not parse") }
                let known = Self.loginProbe([
                    ("postgres", postgres.user ?? "", postgres.password ?? ""),
                    ("rabbitmq", amqp.user ?? "", amqp.password ?? ""),
                ])
                let script = Data(known.command.utf8).base64EncodedString()
                let output = try await runtime.run("echo \(script) | base64 -d | bash", in: b)
                #expect(output.contains("BREACH postgres") && output.contains("BREACH rabbitmq"), "\(output)")
            }
        }
    }

    /// A Docker sandbox (the test image, Deckhand's bridge network, the unprivileged user) passes the same
    /// probes; another container's workspace volume is the other sandbox.
    @Test func aDockerSandboxReachesOnlyItsWorkspace() async throws {
        try await TestRuntime.with { runtime in
            guard try await TestDocker(client: runtime.http).imageExists(TestRuntime.sandboxImage) else {
                throw DeckhandError(
                    .unavailable,
                    "the sandbox image \(TestRuntime.sandboxImage) does not exist: run deploy/sandbox/build-offline.sh (scripts/test.sh does)"
                )
            }
            let worker = try runtime.makeWorker(backends: [.docker])
            try await running(worker) {
                let (a, b) = try await Self.pair(runtime, backend: .docker)
                let container = try #require(try await runtime.store.sandbox(id: a.sandboxID)?.reference)
                let inspected = try await runtime.http.execute(
                    HTTPRequest(
                        url: "http://localhost/v1.41/containers/\(container)/json",
                        unixSocketPath: TestEnvironment.dockerSocket
                    )
                )
                guard case .array(let mounts)? = try JSONValue(parsing: inspected.body)["Mounts"],
                    let volume = mounts.first(where: { $0["Destination"] == "/workspace" })?["Source"]?.stringValue
                else { throw DeckhandError(.protocolViolation, "the container has no workspace volume") }
                #expect(FileManager.default.fileExists(atPath: volume + "/other-secret.txt"))
                try await Self.expectContained(b, runtime: runtime, otherWorkspace: volume)

                let identity = try await runtime.run("id -u; id -G; cat /proc/self/status | grep CapEff", in: b)
                #expect(identity.hasPrefix("1000\n1000\n"), "the agent's shell is the unprivileged user: \(identity)")
                #expect(identity.contains("CapEff:\t0000000000000000"), "and holds no capability: \(identity)")
                let work = try await runtime.run(
                    "pwd; echo ok > here.txt && cat here.txt; echo t > /tmp/t && cat /tmp/t; touch ~/.x && echo home",
                    in: b
                )
                #expect(work.contains("/workspace\nok\nt\nhome"), "\(work)")
                let network = try await runtime.run("cat /proc/net/route | awk 'NR==2{print $1}'", in: b)
                #expect(!network.contains("lo"), "the container has a network of its own: \(network)")
            }
        }
    }
}
