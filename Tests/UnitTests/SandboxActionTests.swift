import DeckhandCore
import Testing

@testable import SandboxServer

@Suite struct SandboxActionTests {
    @Test func aRunActionDecodesWithItsTopLevelTimeout() throws {
        let request: JSONValue = [
            "action": [
                "action": "run",
                "args": [
                    "command": "ls -la", "is_input": "false", "thought": "", "blocking": true, "is_static": false,
                    "cwd": nil, "hidden": false, "confirmation_state": "confirmed", "security_risk": 0,
                ],
                "timeout": 120,
            ]
        ]
        #expect(
            try SandboxAction(request: request)
                == .run(command: "ls -la", isInput: false, blocking: true, hardTimeout: .seconds(120), hidden: false)
        )
    }

    @Test func fileActionsDecode() throws {
        let read: JSONValue = [
            "action": [
                "action": "read", "args": ["path": "/w/a.txt", "view_range": [1, -1], "impl_source": "oh_aci"],
            ]
        ]
        #expect(
            try SandboxAction(request: read)
                == .read(path: "/w/a.txt", start: 0, end: -1, viewRange: [1, -1], implSource: "oh_aci")
        )
        let edit: JSONValue = [
            "action": [
                "action": "edit",
                "args": [
                    "path": "/w/a.txt", "command": "str_replace", "old_str": "a", "new_str": "b", "insert_line": nil,
                ],
            ]
        ]
        #expect(
            try SandboxAction(request: edit)
                == .edit(
                    path: "/w/a.txt",
                    command: "str_replace",
                    fileText: nil,
                    oldStr: "a",
                    newStr: "b",
                    insertLine: nil
                )
        )
        let write: JSONValue = ["action": ["action": "write", "args": ["path": "b.txt", "content": "x\n"]]]
        #expect(try SandboxAction(request: write) == .write(path: "b.txt", content: "x\n", start: 0, end: -1))
    }

    static let badRequests: [(JSONValue, String)] = [
        (JSONValue.array([]), "JSON object"),
        (["action": "run"], "JSON object"),
        (["action": ["args": [:]]], "action type"),
        (["action": ["action": "message", "args": ["content": "hi"]]], "unknown action type `message`"),
        (["action": ["action": "run", "args": [:]]], "`args.command`"),
        (["action": ["action": "read", "args": ["path": "/a", "start": "x"]]], "`args.start`"),
        (["action": ["action": "edit", "args": ["path": "/a"]]], "`args.command` is required"),
    ]

    @Test(arguments: badRequests)
    func badRequestsSayWhatIsWrong(request: JSONValue, detail: String) {
        #expect {
            _ = try SandboxAction(request: request)
        } throws: { error in
            (error as? SandboxAction.Invalid)?.detail.contains(detail) == true
        }
    }
}
