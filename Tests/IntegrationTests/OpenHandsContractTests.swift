import DeckhandCore
import DeckhandTesting
import Foundation
import HTTPClient
import Testing

/// Deckhand's wire shapes read by OpenHands' own parsers (openhands-ai's `event_from_dict`, through
/// `scripts/openhands/check.py`): what the sandbox server answers to each action, and every event a
/// conversation streams. A shape OpenHands' client cannot parse is a defect even when our own tests pass.
@Suite struct OpenHandsContractTests {
    /// Fails with OpenHands' own words for every event it could not parse.
    static func expectParsed(_ events: [JSONValue], _ what: String) async throws -> [String?] {
        let verdict = try await OpenHandsParsers.check(events)
        #expect(verdict.failures.isEmpty, "OpenHands cannot parse \(what): \(verdict.failures)")
        return verdict.classes
    }

    @Test func everyObservationOfTheSandboxServerParses() async throws {
        try await withLoopbackServer { port in
            try await TestSandbox.with { server in
                let file = server.workspace + "/contract.txt"
                let actions: [(JSONValue, String)] = [
                    (["action": "run", "args": ["command": "echo hello"]], "CmdOutputObservation"),
                    (["action": "run", "args": ["command": "false"]], "CmdOutputObservation"),
                    (
                        ["action": "write", "args": ["path": .string(file), "content": "one\ntwo\n"]],
                        "FileWriteObservation"
                    ),
                    (["action": "read", "args": ["path": .string(file)]], "FileReadObservation"),
                    (
                        ["action": "read", "args": ["path": .string(file), "impl_source": "oh_aci"]],
                        "FileReadObservation"
                    ),
                    (
                        [
                            "action": "edit",
                            "args": [
                                "path": .string(file + ".new"), "command": "create", "file_text": "alpha\n",
                                "impl_source": "oh_aci",
                            ],
                        ],
                        "FileEditObservation"
                    ),
                    (
                        [
                            "action": "edit",
                            "args": [
                                "path": .string(file), "command": "str_replace", "old_str": "two",
                                "new_str": "three", "impl_source": "oh_aci",
                            ],
                        ],
                        "FileEditObservation"
                    ),
                    (
                        [
                            "action": "edit",
                            "args": [
                                "path": .string(file), "command": "insert", "insert_line": 1, "new_str": "1.5",
                                "impl_source": "oh_aci",
                            ],
                        ],
                        "FileEditObservation"
                    ),
                    (
                        [
                            "action": "edit",
                            "args": ["path": .string(file), "command": "undo_edit", "impl_source": "oh_aci"],
                        ],
                        "FileEditObservation"
                    ),
                    (
                        [
                            "action": "edit",
                            "args": ["path": .string(file), "command": "view", "impl_source": "oh_aci"],
                        ],
                        "FileReadObservation"
                    ),
                    (
                        ["action": "browse", "args": ["url": .string("http://127.0.0.1:\(port)/hello")]],
                        "BrowserOutputObservation"
                    ),
                    (
                        ["action": "browse", "args": ["url": .string("http://127.0.0.1:\(port)/status/404")]],
                        "BrowserOutputObservation"
                    ),
                    (["action": "read", "args": ["path": "/definitely/missing"]], "ErrorObservation"),
                    (
                        [
                            "action": "edit",
                            "args": ["path": .string(file), "command": "create", "impl_source": "oh_aci"],
                        ],
                        "ErrorObservation"
                    ),
                ]
                var observations: [JSONValue] = []
                for (action, _) in actions {
                    let answer = try await server.execute(action)
                    #expect(answer.status == 200, "\(action): \(answer.body)")
                    observations.append(answer.body)
                }
                let classes = try await Self.expectParsed(observations, "the sandbox server's observations")
                for (index, (action, expected)) in actions.enumerated() where index < classes.count {
                    #expect(classes[index] == expected, "\(action) → \(observations[index])")
                }
            }
        }
    }

    @Test func everyEventOfAConversationParses() async throws {
        try await TestConversations.with { bed in
            let file = "/tmp/contract-\(UUID().uuidString.prefix(8)).txt"
            let model = bed.scripted([
                .bash("echo from-the-sandbox"),
                .init(toolCalls: [.init(name: "think", arguments: ["thought": "Next, a file."])]),
                .init(
                    content: "Writing it.",
                    toolCalls: [
                        .init(
                            name: "str_replace_editor",
                            arguments: ["command": "create", "path": .string(file), "file_text": "one\n"]
                        )
                    ]
                ),
                .init(
                    toolCalls: [
                        .init(
                            name: "str_replace_editor",
                            arguments: [
                                "command": "str_replace", "path": .string(file), "old_str": "one", "new_str": "two",
                            ]
                        )
                    ]
                ),
                .init(toolCalls: [
                    .init(name: "str_replace_editor", arguments: ["command": "view", "path": .string(file)])
                ]),
                // A call the agent cannot make: an error observation the model reads.
                .init(toolCalls: [.init(name: "str_replace_editor", arguments: ["command": "view"])]),
                .init(toolCalls: [.init(name: "no_such_tool", arguments: [:])]),
                .reply("Shall I go on?"),
                .finish("Done."),
            ])
            try await running(try bed.makeRuntimeWorker(), bed.makeWorker()) {
                try await bed.withGateway { gateway in
                    let id = try await gateway.createConversation("Work on a file.", model: model)
                    _ = try await GatewayTests.waitForState(gateway, id, ["awaiting_user_input", "error"])
                    _ = try await gateway.request(
                        .post,
                        "/api/conversations/\(id)/message",
                        body: #"{"message": "Yes, finish."}"#
                    )
                    _ = try await GatewayTests.waitForState(gateway, id, ["finished", "error"])
                    let all = try await gateway.json(.get, "/api/conversations/\(id)/events?limit=100")
                    guard case .array(let events)? = all["events"] else {
                        Issue.record("no events array: \(all)")
                        return
                    }
                    let classes = try await Self.expectParsed(events, "the conversation's events")
                    for expected in [
                        "SystemMessageAction", "MessageAction", "CmdRunAction", "CmdOutputObservation",
                        "AgentThinkAction", "FileEditAction", "FileEditObservation", "FileReadAction",
                        "FileReadObservation", "ErrorObservation", "AgentStateChangedObservation", "AgentFinishAction",
                    ] {
                        #expect(classes.contains(expected), "a \(expected) among \(classes)")
                    }
                    let trajectory = try await gateway.json(.get, "/api/conversations/\(id)/trajectory")
                    if case .array(let items)? = trajectory["trajectory"] {
                        _ = try await Self.expectParsed(items, "the trajectory")
                    } else {
                        Issue.record("no trajectory: \(trajectory)")
                    }
                }
            }
        }
    }
}
