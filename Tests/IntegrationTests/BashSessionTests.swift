import DeckhandCore
import DeckhandTesting
import Foundation
import SandboxServer
import Testing

/// The persistent shell against a real bash: each test has its own session and temporary directory.
@Suite struct BashSessionTests {
    /// Runs `body` with a fresh session in a fresh directory, and closes it afterwards.
    private func withSession(
        noChangeTimeout: Duration = .seconds(10),
        _ body: (BashSession, String) async throws -> Void
    ) async throws {
        let directory = NSTemporaryDirectory() + "deckhand-shell-\(UUID().uuidString)"
        let session = try await BashSession.start(
            workingDirectory: directory,
            username: nil,
            uid: nil,
            noChangeTimeout: noChangeTimeout
        )
        do {
            try await body(session, directory)
        } catch {
            await session.close()
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        await session.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func run(_ session: BashSession, _ command: String) async throws -> ShellOutcome {
        try await session.execute(ShellRequest(command: command))
    }

    @Test func theFirstCommandOfAFreshSessionHasCleanOutput() async throws {
        try await withSession { session, directory in
            let outcome = try await run(session, "echo hi")
            #expect(outcome.output == "hi")
            #expect(outcome.exitCode == 0)
            #expect(outcome.prefix == "")
            #expect(outcome.suffix == "\n[The command completed with exit code 0.]")
            #expect(outcome.workingDirectory == directory)
            #expect(outcome.username == String(cString: getpwuid(geteuid()).pointee.pw_name))
            #expect(!outcome.hostname.isEmpty)
        }
    }

    @Test func exitCodesAreReported() async throws {
        try await withSession { session, _ in
            let r1 = try await run(session, "false")
            #expect(r1.exitCode == 1)
            let r2 = try await run(session, "(exit 3)")
            #expect(r2.exitCode == 3)
            let r3 = try await run(session, "true")
            #expect(r3.exitCode == 0)
        }
    }

    @Test func theWorkingDirectoryPersists() async throws {
        try await withSession { session, _ in
            let cd = try await run(session, "cd /tmp")
            #expect(cd.workingDirectory == "/tmp")
            let pwd = try await run(session, "pwd")
            #expect(pwd.output == "/tmp")
            #expect(pwd.workingDirectory == "/tmp")
        }
    }

    @Test func theEnvironmentPersists() async throws {
        try await withSession { session, _ in
            _ = try await run(session, "export X=1")
            let r4 = try await run(session, "echo $X")
            #expect(r4.output == "1")
        }
    }

    @Test func stdoutAndStderrAreMerged() async throws {
        try await withSession { session, _ in
            let outcome = try await run(session, "echo out; echo err >&2; echo out2")
            #expect(outcome.output == "out\nerr\nout2")
        }
    }

    @Test func aSilentCommandHitsTheSoftTimeoutAndCtrlCEndsIt() async throws {
        try await withSession(noChangeTimeout: .seconds(1)) { session, _ in
            let clock = ContinuousClock()
            var outcome = ShellOutcome(output: "", exitCode: 0, workingDirectory: "", username: "", hostname: "")
            let waited = try await clock.measure { outcome = try await run(session, "echo started; sleep 30") }
            #expect(outcome.exitCode == -1)
            #expect(outcome.output == "started")
            #expect(outcome.suffix.contains("no new output"))
            #expect(outcome.suffix.contains("empty command"))
            #expect(waited < .seconds(5))
            let interrupted = try await clock.measure {
                outcome = try await session.execute(ShellRequest(command: "C-c", isInput: true))
            }
            #expect(outcome.exitCode == 130)
            #expect(interrupted < .seconds(1))
            let r5 = try await run(session, "echo after")
            #expect(r5.output == "after")
        }
    }

    @Test func theHardTimeoutReturnsWhileTheCommandKeepsRunning() async throws {
        try await withSession { session, _ in
            let outcome = try await session.execute(
                ShellRequest(command: "sleep 100", hardTimeout: .seconds(1), blocking: true)
            )
            #expect(outcome.exitCode == -1)
            #expect(outcome.suffix.contains("timed out after 1 seconds"))
            #expect(outcome.suffix.contains("still running"))
            let interrupted = try await run(session, "C-c")
            #expect(interrupted.exitCode == 130)
        }
    }

    @Test func ctrlCInterruptsARunningCommand() async throws {
        try await withSession(noChangeTimeout: .milliseconds(300)) { session, _ in
            let r6 = try await run(session, "sleep 100")
            #expect(r6.exitCode == -1)
            let outcome = try await run(session, "C-c")
            #expect(outcome.exitCode == 130)
            #expect(outcome.prefix.contains("previous command"))
            let r7 = try await run(session, "echo $?")
            #expect(r7.output == "130")
        }
    }

    @Test func aNewCommandWhileOneRunsIsNotExecuted() async throws {
        // Six seconds of silence against a 500 ms soft timeout: a wide margin on a loaded machine.
        try await withSession(noChangeTimeout: .milliseconds(500)) { session, directory in
            let first = try await run(session, "echo one; sleep 6; echo two")
            #expect(first.exitCode == -1)
            #expect(first.output == "one")
            let refused = try await run(session, "touch refused")
            #expect(refused.exitCode == -1)
            #expect(refused.suffix.contains("NOT executed"))
            #expect(!FileManager.default.fileExists(atPath: directory + "/refused"))
            let rest = try await session.execute(ShellRequest(command: "", blocking: true))
            #expect(rest.output == "two")
            #expect(rest.exitCode == 0)
            #expect(rest.prefix == "[Below is the output of the previous command.]\n")
            #expect(!FileManager.default.fileExists(atPath: directory + "/refused"))
        }
    }

    @Test func inputIsTypedIntoTheRunningProgram() async throws {
        try await withSession(noChangeTimeout: .milliseconds(300)) { session, _ in
            let waiting = try await run(session, "read x; echo got $x")
            #expect(waiting.exitCode == -1)
            let answered = try await session.execute(ShellRequest(command: "hello", isInput: true))
            #expect(answered.output == "got hello")
            #expect(answered.exitCode == 0)
            let nothing = try await session.execute(ShellRequest(command: "more", isInput: true))
            #expect(nothing.suffix.contains("no running command"))
        }
    }

    @Test func longOutputIsCutInTheMiddle() async throws {
        try await withSession { session, _ in
            let outcome = try await run(session, "printf 'a%.0s' {1..50000}; printf 'b%.0s' {1..50000}")
            #expect(outcome.output.hasPrefix(String(repeating: "a", count: 15_000) + "\n"))
            #expect(outcome.output.hasSuffix("\n" + String(repeating: "b", count: 15_000)))
            #expect(outcome.output.contains("70000 characters cut"))
            #expect(outcome.exitCode == 0)
        }
    }

    @Test func aFloodOfOutputIsHeldInBoundedMemory() async throws {
        try await withSession { session, _ in
            let outcome = try await run(session, "head -c 20000000 /dev/zero | tr '\\0' 'z'; echo; echo end")
            #expect(outcome.exitCode == 0)
            #expect(outcome.output.hasSuffix("z\nend"))
            #expect(outcome.output.contains("[... 19970004 characters cut"))
        }
    }

    @Test func severalCommandsAreRefused() async throws {
        try await withSession { session, directory in
            await #expect {
                _ = try await run(session, "touch one\ntouch two")
            } throws: { error in
                guard let error = error as? DeckhandError else { return false }
                return error.code == .multipleCommands && error.message.contains("(2) touch two")
            }
            #expect(!FileManager.default.fileExists(atPath: directory + "/one"))
        }
    }

    @Test func aHereDocumentAndAnIfBlockRunAsOneCommand() async throws {
        try await withSession { session, _ in
            let heredoc = try await run(session, "cat <<'EOF'\nline 1\n\nline $2\nEOF")
            #expect(heredoc.output == "line 1\n\nline $2")
            let block = try await run(session, "if true; then\n  echo yes\nelse\n  echo no\nfi")
            #expect(block.output == "yes")
            let r8 = try await run(session, "echo 'a\tb'")
            #expect(r8.output == "a\tb")
            let r9 = try await run(session, "echo \"hi!\"")
            #expect(r9.output == "hi!")
        }
    }

    @Test func concurrentCallsRunOneAfterTheOther() async throws {
        try await withSession { session, _ in
            try await withThrowingTaskGroup(of: ShellOutcome.self) { group in
                for index in 0..<8 {
                    group.addTask { try await session.execute(ShellRequest(command: "echo \(index); sleep 0.05")) }
                }
                var outputs: [String] = []
                for try await outcome in group {
                    #expect(outcome.exitCode == 0)
                    outputs.append(outcome.output)
                }
                #expect(outputs.sorted() == (0..<8).map(String.init))
            }
        }
    }

    @Test func anExitedShellIsRestarted() async throws {
        try await withSession { session, _ in
            _ = try await run(session, "cd /tmp")
            let exited = try await run(session, "exit 4")
            #expect(exited.exitCode == 4)
            #expect(exited.suffix.contains("new shell"))
            let after = try await run(session, "pwd")
            #expect(after.output == "/tmp")
            #expect(after.exitCode == 0)
        }
    }

    @Test func aCommandThatFinishedAfterItsAnswerIsReportedOnce() async throws {
        try await withSession(noChangeTimeout: .milliseconds(300)) { session, _ in
            // Six seconds of silence against a 300 ms soft timeout: a fresh CI run, with a debug test binary
            // starting every suite at once on two cores, starved the answer past two seconds.
            let first = try await run(session, "sleep 6; echo late")
            #expect(first.exitCode == -1)
            try await Task.sleep(for: .milliseconds(6500))
            let next = try await run(session, "echo next")
            #expect(next.output == "next")
            #expect(next.exitCode == 0)
            #expect(next.prefix.contains("late\n"))
            #expect(next.prefix.contains("completed with exit code 0"))
        }
    }

    @Test func aLongSingleLineCommandIsNotCut() async throws {
        try await withSession { session, _ in
            let word = String(repeating: "x", count: 10_000)
            let outcome = try await run(session, "echo \(word) | wc -c")
            #expect(outcome.output == "10001")
        }
    }

    @Test func anExitedShellWhoseJobHoldsTheTerminalIsDetected() async throws {
        try await withSession(noChangeTimeout: .milliseconds(300)) { session, _ in
            let exited = try await run(session, "sleep 2 & exit 0")
            #expect(exited.suffix.contains("new shell"))
            let after = try await run(session, "echo alive")
            #expect(after.output == "alive")
        }
    }

    @Test func theShellRunsAsAnotherUser() async throws {
        try #require(geteuid() == 0, "switching users needs root: run the tests as root (as scripts/test.sh and CI do)")
        let directory = NSTemporaryDirectory() + "deckhand-shell-\(UUID().uuidString)"
        let session = try await BashSession.start(
            workingDirectory: directory,
            username: "nobody",
            uid: nil,
            noChangeTimeout: .seconds(10)
        )
        let whoami = try await session.execute(ShellRequest(command: "whoami; echo $USER; touch mine && echo ok"))
        #expect(whoami.output == "nobody\nnobody\nok")
        #expect(whoami.username == "nobody")
        await session.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Creates a system user with a unique name (and deletes it afterwards).
    @Test func aMissingUserIsCreated() async throws {
        try #require(geteuid() == 0, "creating a user needs root: run the tests as root (as scripts/test.sh and CI do)")
        let name = "dhshell\(UInt32.random(in: 10_000...99_999))"
        let directory = NSTemporaryDirectory() + "deckhand-shell-\(UUID().uuidString)"
        let session = try await BashSession.start(
            workingDirectory: directory,
            username: name,
            uid: nil,
            noChangeTimeout: .seconds(10)
        )
        let outcome = try await session.execute(ShellRequest(command: "whoami; echo $HOME; touch mine && echo ok"))
        #expect(outcome.output == "\(name)\n/home/\(name)\nok")
        await session.close()
        try? FileManager.default.removeItem(atPath: directory)
        try await TestEnvironment.runDetached("/usr/sbin/userdel", ["-r", name])
    }

    @Test func echoLatency() async throws {
        try await withSession { session, _ in
            let clock = ContinuousClock()
            var samples: [Duration] = []
            for _ in 0..<200 {
                var output = ""
                samples.append(try await clock.measure { output = try await run(session, "echo hi").output })
                #expect(output == "hi")
            }
            samples.sort()
            let p50 = samples[samples.count / 2]
            let p99 = samples[samples.count * 99 / 100]
            print("BashSession echo hi: p50 \(p50), p99 \(p99)")
            #expect(p50 < .milliseconds(50))
        }
    }
}
