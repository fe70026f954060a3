import DeckhandCore

/// `GET /openapi.json`: the OpenAPI 3.1 description of every route, with request and response schemas.
/// The integration tests validate every response they get against it.
enum OpenAPIDocument {
    static let json: String = document.serialized

    // MARK: Schema helpers

    static func ref(_ name: String) -> JSONValue { ["$ref": .string("#/components/schemas/\(name)")] }
    static let string: JSONValue = ["type": "string"]
    static let nullableString: JSONValue = ["type": ["string", "null"]]

    /// An optional string field of a request: null is taken as absent; at most `maxLength` code points.
    static func optionalString(_ maxLength: Int) -> JSONValue {
        ["type": ["string", "null"], "maxLength": .number(Double(maxLength))]
    }
    static let integer: JSONValue = ["type": "integer"]
    /// The last event id a stream's client has: -1 (nothing yet) up to the largest id.
    static let lastEventID: JSONValue = ["type": "integer", "minimum": -1, "maximum": 2_147_483_647]
    static let number: JSONValue = ["type": "number"]
    static let boolean: JSONValue = ["type": "boolean"]

    static func object(
        _ properties: [String: JSONValue],
        required: [String] = [],
        additional: JSONValue = false,
        description: String? = nil
    ) -> JSONValue {
        var schema: [String: JSONValue] = [
            "type": "object",
            "properties": .object(properties),
            "additionalProperties": additional,
        ]
        if !required.isEmpty { schema["required"] = .array(required.map(JSONValue.string)) }
        if let description { schema["description"] = .string(description) }
        return .object(schema)
    }

    static func array(_ items: JSONValue) -> JSONValue { ["type": "array", "items": items] }

    static func enumeration(_ values: [String], nullable: Bool = false) -> JSONValue {
        [
            "type": nullable ? ["string", "null"] : "string",
            "enum": .array(values.map(JSONValue.string) + (nullable ? [.null] : [])),
        ]
    }

    // MARK: Operations

    static func content(_ schema: JSONValue, type: String = "application/json") -> JSONValue {
        [type: ["schema": schema]]
    }

    static let errorResponse: JSONValue = ["description": "An error", "content": content(ref("Error"))]

    /// An operation: its answers (status → schema), the common errors, parameters, a body.
    static func operation(
        _ summary: String,
        id: String,
        ok: JSONValue,
        okStatus: String = "200",
        okType: String = "application/json",
        body: JSONValue? = nil,
        bodyRequired: Bool = true,
        bodyType: String = "application/json",
        parameters: [JSONValue] = [],
        errors: [String] = ["401", "404", "422", "503"],
        open: Bool = false
    ) -> JSONValue {
        var responses: [String: JSONValue] = [
            okStatus: ["description": "Success", "content": content(ok, type: okType)]
        ]
        // Any route: a request from a web page of an origin the operator did not allow is refused (403); a body
        // that is not sent as JSON is refused (415).
        var statuses = Set(errors + ["403"])
        if errors.contains("400") { statuses.insert("415") }
        // A client address past its limit of wrong keys is refused before its key is looked at.
        if errors.contains("401") { statuses.insert("429") }
        for status in statuses { responses[status] = errorResponse }
        var operation: [String: JSONValue] = [
            "summary": .string(summary), "operationId": .string(id), "responses": .object(responses),
        ]
        if !parameters.isEmpty { operation["parameters"] = .array(parameters) }
        if let body {
            operation["requestBody"] = ["required": .bool(bodyRequired), "content": content(body, type: bodyType)]
        }
        if open { operation["security"] = [] }
        return .object(operation)
    }

    static func parameter(
        _ name: String,
        in location: String,
        _ schema: JSONValue,
        _ description: String,
        required: Bool = false
    ) -> JSONValue {
        [
            "name": .string(name), "in": .string(location), "required": .bool(required || location == "path"),
            "schema": schema, "description": .string(description),
        ]
    }

    static let conversationID = parameter(
        "id",
        in: "path",
        string,
        "The conversation id: a UUID, with or without dashes."
    )

    // MARK: The document

    static let agentStates = [
        "loading", "running", "awaiting_user_input", "paused", "stopped", "finished", "rejected", "error",
        "awaiting_user_confirmation", "user_confirmed", "user_rejected", "rate_limited",
    ]

    /// A trajectory to replay: an array of events (objects), or `{"trajectory": [...]}`.
    static let trajectory: JSONValue = [
        "anyOf": [
            array(["type": "object"]),
            object(["trajectory": array(["type": "object"])], required: ["trajectory"], additional: true),
        ]
    ]

    /// One message of the SSE stream, as OpenAPI 3.1 describes a `text/event-stream` (a schema per message,
    /// its fields as strings).
    static let serverSentEvent: JSONValue = [
        "oneOf": [
            object(
                [
                    "event": ["const": "event"], "id": ["type": "string", "pattern": "^[0-9]+$"],
                    "data": ["type": "string", "contentMediaType": "application/json", "contentSchema": ref("Event")],
                ],
                required: ["event", "id", "data"],
                additional: true
            ),
            object(
                [
                    "event": ["const": "error"],
                    "data": ["type": "string", "contentMediaType": "application/json", "contentSchema": ref("Error")],
                ],
                required: ["event", "data"],
                additional: true
            ),
        ],
        "description":
            "A text/event-stream. Each stored or live event is one message `id: <event id>`, `event: event`, `data: <the Event as JSON>`; a client that falls too far behind gets one `event: error` message whose data is an Error (code STREAM$TOO_SLOW) and the stream ends; comment lines (`: keep-alive`) keep idle connections open.",
    ]

    static let schemas: [String: JSONValue] = [
        "Error": object(
            ["status": enumeration(["error"]), "code": string, "message": string],
            required: ["status", "code", "message"],
            description: "Every error: a stable code (such as CONVERSATION$NOT_FOUND) and a human message."
        ),
        "ConversationInfo": object(
            [
                "conversation_id": string, "title": string, "created_at": string, "last_updated_at": string,
                "status": enumeration(["STARTING", "RUNNING", "STOPPED", "ARCHIVED", "ERROR"]),
                "runtime_status": nullableString, "selected_repository": nullableString,
                "selected_branch": nullableString, "git_provider": nullableString, "trigger": nullableString,
                "url": string, "session_api_key": ["type": "null"], "num_connections": integer,
                "conversation_version": enumeration(["V0"]), "agent_state": enumeration(agentStates),
                "sandbox_id": nullableString, "llm_model": nullableString, "prompt_tokens": integer,
                "completion_tokens": integer, "accumulated_cost": number,
            ],
            required: [
                "conversation_id", "title", "created_at", "last_updated_at", "status", "runtime_status", "url",
                "session_api_key", "num_connections", "conversation_version", "agent_state",
            ],
            description:
                "OpenHands' ConversationInfo; Deckhand adds agent_state, sandbox_id, llm_model and the token and cost totals. num_connections counts the live-stream clients of every gateway (another gateway's within about a second)."
        ),
        "ConversationPage": object(
            ["results": array(ref("ConversationInfo")), "next_page_id": nullableString],
            required: ["results", "next_page_id"]
        ),
        "NewConversation": object(
            [
                "initial_user_msg": optionalString(500_000),
                "image_urls": ["type": ["array", "null"], "items": string],
                "repository": optionalString(500), "selected_branch": optionalString(250),
                "git_provider": optionalString(50), "conversation_instructions": optionalString(100_000),
                "replay_json": [
                    "anyOf": [
                        trajectory,
                        [
                            "type": "string", "format": "trajectory-json", "contentMediaType": "application/json",
                            "contentSchema": trajectory,
                        ],
                        ["type": "null"],
                    ],
                    "description":
                        "An OpenHands trajectory (an array of events, or {\"trajectory\": [...]}), or a string holding one (as OpenHands sends it; an empty string is absent).",
                ],
                "runtime": [
                    "type": ["string", "null"],
                    "enum": .array(RuntimeSettings.Backend.allCases.map { .string($0.rawValue) } + [.null]),
                    "description":
                        "A backend the operator allows (runtime.user_backends); another one is a 403 LIMIT$BACKEND.",
                ],
                "llm_model": optionalString(200),
                "max_iterations": ["type": ["integer", "null"], "minimum": 1, "maximum": 100_000],
                "max_budget_per_task": ["type": ["number", "null"], "minimum": 0, "maximum": 1_000_000],
                "conversation_id": [
                    "type": ["string", "null"], "format": "uuid",
                    "description": "The new conversation's id (32 hex digits or a dashed UUID); 409 if it exists.",
                ],
                "suggested_task": ["type": ["object", "null"], "description": "Accepted (OpenHands) and ignored."],
                "create_microagent": ["type": ["object", "null"], "description": "Accepted (OpenHands) and ignored."],
                "mcp_config": ["type": ["object", "null"], "description": "Accepted (OpenHands) and ignored."],
            ],
            description:
                "Every field is optional (null is taken as absent), but a body is required (`{}` at least); an unknown field is a 422. A value outside what the operator allows (backend, model, iterations, budget) is a 403 with a LIMIT$ code."
        ),
        "ConversationCreated": object(
            [
                "status": enumeration(["ok"]), "conversation_id": string,
                "conversation_status": enumeration(["STARTING", "RUNNING"]), "message": ["type": "null"],
            ],
            required: ["status", "conversation_id", "conversation_status", "message"]
        ),
        "ConversationResponse": object(
            [
                "status": enumeration(["ok"]), "conversation_id": string,
                "conversation_status": enumeration(["STARTING", "RUNNING", "STOPPED", "ARCHIVED", "ERROR"]),
                "message": nullableString,
            ],
            required: ["status", "conversation_id", "conversation_status", "message"]
        ),
        "Success": object(["success": ["const": true]], required: ["success"]),
        "Event": object(
            [
                "id": integer, "timestamp": string, "source": enumeration(["agent", "user", "environment"]),
                "message": string, "cause": ["type": ["integer", "null"]], "action": string,
                "args": ["type": "object"], "observation": string, "content": string, "extras": ["type": "object"],
                "success": boolean, "tool_call_metadata": ["type": ["object", "null"]],
                "llm_metrics": ["type": ["object", "null"]], "timeout": ["type": ["number", "null"]],
            ],
            required: ["id", "source"],
            additional: true,
            description:
                "An OpenHands V0 event: an action (action + args) or an observation (observation + content + extras)."
        ),
        "EventPage": object(["events": array(ref("Event")), "has_more": boolean], required: ["events", "has_more"]),
        "Trajectory": object(["trajectory": array(ref("Event"))], required: ["trajectory"]),
        "UserAction": [
            "oneOf": [
                object(
                    [
                        "action": enumeration(["message"]),
                        "args": object(
                            [
                                "content": ["type": "string"],
                                "image_urls": ["type": ["array", "null"], "items": string],
                            ],
                            required: ["content"],
                            additional: true
                        ),
                    ],
                    required: ["action", "args"]
                ),
                object(
                    [
                        "action": enumeration(["change_agent_state"]),
                        "args": object(
                            [
                                "agent_state": enumeration([
                                    "stopped", "paused", "running", "user_confirmed", "user_rejected",
                                ])
                            ],
                            required: ["agent_state"],
                            additional: true
                        ),
                    ],
                    required: ["action", "args"]
                ),
            ],
            "description":
                "{action: message, args: {content, image_urls?}} or {action: change_agent_state, args: {agent_state}} (user_confirmed and user_rejected are a 409: no confirmation mode).",
        ],
        "Health": object(
            [
                "status": enumeration(["ok", "unavailable"]),
                "dependencies": object(
                    ["rabbitmq": ref("Dependency"), "postgresql": ref("Dependency")],
                    required: ["rabbitmq", "postgresql"]
                ),
            ],
            required: ["status", "dependencies"]
        ),
        "Dependency": object(
            [
                "status": enumeration(["ok", "unavailable"]), "version": nullableString, "error": string,
                "latency_ms": number,
            ],
            required: ["status"]
        ),
    ]

    /// The answers of a workspace-file request besides success: the sandbox is not running (409), it failed
    /// (502), no worker answered in time (504).
    static let workspaceDirectory = parameter(
        "path",
        in: "query",
        string,
        "A directory relative to the workspace (default: its root)."
    )

    static let workspaceErrors = ["401", "404", "409", "422", "502", "503", "504"]

    /// The methods (upper case, sorted) the document gives the path `path` matches (`{name}` matches one
    /// segment); empty when it matches none.
    static func methods(of path: String) -> [String] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for (template, item) in paths {
            let parts = template.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == segments.count,
                zip(parts, segments).allSatisfy({ part, segment in
                    part == segment || (part.hasPrefix("{") && part.hasSuffix("}") && !segment.isEmpty)
                }),
                case .object(let operations) = item
            else { continue }
            return operations.keys.map { $0.uppercased() }.sorted()
        }
        return []
    }

    static let paths: [String: JSONValue] = [
        "/api/conversations": [
            "post": operation(
                "Create a conversation and start its agent",
                id: "createConversation",
                ok: ref("ConversationCreated"),
                body: ref("NewConversation"),
                errors: ["400", "401", "409", "413", "422", "429", "503"]
            ),
            "get": operation(
                "List the caller's conversations, newest first",
                id: "listConversations",
                ok: ref("ConversationPage"),
                parameters: [
                    parameter(
                        "page_id",
                        in: "query",
                        string,
                        "The next_page_id of the previous page (opaque). Empty or absent: the first page. A value this API did not return: 404 REQUEST$UNKNOWN_PAGE."
                    ),
                    parameter("limit", in: "query", ["type": "integer", "minimum": 1, "maximum": 100], "Default 20."),
                ],
                errors: ["401", "404", "422", "503"]
            ),
        ],
        "/api/conversations/{id}": [
            "get": operation(
                "A conversation",
                id: "getConversation",
                ok: ref("ConversationInfo"),
                parameters: [conversationID]
            ),
            "patch": operation(
                "Rename a conversation",
                id: "renameConversation",
                ok: ["const": true],
                body: object(["title": ["type": "string", "minLength": 1, "maxLength": 200]], required: ["title"]),
                parameters: [conversationID],
                errors: ["400", "401", "404", "413", "422", "503"]
            ),
            "delete": operation(
                "Stop the agent, destroy the sandbox and delete the conversation",
                id: "deleteConversation",
                ok: ["const": true],
                parameters: [conversationID]
            ),
        ],
        "/api/conversations/{id}/start": [
            "post": operation(
                "Start (or wake) the conversation; idempotent",
                id: "startConversation",
                ok: ref("ConversationResponse"),
                body: object(
                    ["providers_set": ["type": ["array", "null"], "items": string]],
                    description: "OpenHands' ProvidersSetModel: accepted and ignored (no git tokens reach a sandbox)."
                ),
                bodyRequired: false,
                parameters: [conversationID],
                errors: ["400", "401", "404", "413", "422", "429", "503"]
            )
        ],
        "/api/conversations/{id}/stop": [
            "post": operation(
                "Stop the agent and its sandbox",
                id: "stopConversation",
                ok: ref("ConversationResponse"),
                parameters: [conversationID],
                errors: ["400", "401", "404", "413", "422", "503"]
            )
        ],
        "/api/conversations/{id}/message": [
            "post": operation(
                "Send a user message",
                id: "sendMessage",
                ok: ref("Success"),
                body: object(["message": ["type": "string", "maxLength": 500_000]], required: ["message"]),
                parameters: [conversationID],
                errors: ["400", "401", "404", "413", "422", "503"]
            )
        ],
        "/api/conversations/{id}/events": [
            "post": operation(
                "Send a user action",
                id: "sendUserAction",
                ok: ref("Success"),
                body: ref("UserAction"),
                parameters: [conversationID],
                errors: ["400", "401", "404", "409", "413", "422", "503"]
            ),
            "get": operation(
                "A page of the conversation's events",
                id: "listEvents",
                ok: ref("EventPage"),
                parameters: [
                    conversationID,
                    parameter(
                        "start_id",
                        in: "query",
                        ["type": "integer", "minimum": 0, "maximum": 2_147_483_647],
                        "The first id (default 0)."
                    ),
                    parameter(
                        "end_id",
                        in: "query",
                        ["type": "integer", "minimum": 0, "maximum": 2_147_483_647],
                        "The last id."
                    ),
                    parameter("reverse", in: "query", boolean, "Newest first."),
                    parameter("limit", in: "query", ["type": "integer", "minimum": 1, "maximum": 100], "Default 20."),
                ]
            ),
        ],
        "/api/conversations/{id}/events/stream": [
            "get": operation(
                "The conversation's events as Server-Sent Events: every event after Last-Event-ID (or latest_event_id), then live ones",
                id: "streamEvents",
                ok: serverSentEvent,
                okType: "text/event-stream",
                parameters: [
                    conversationID,
                    parameter(
                        "Last-Event-ID",
                        in: "header",
                        lastEventID,
                        "The last event id the client has (-1: none)."
                    ),
                    parameter(
                        "latest_event_id",
                        in: "query",
                        lastEventID,
                        "The same, for clients that cannot set it (Last-Event-ID wins)."
                    ),
                    parameter("api_key", in: "query", string, "The API key, for clients that cannot set headers."),
                ]
            )
        ],
        "/sockets/events/{id}": [
            "get": operation(
                "The conversation's events over a WebSocket (one event per text frame): every event after latest_event_id, then live ones. Without a key in the request, the first frame must be {\"type\":\"auth\",\"api_key\":…}. The client may send user actions. Close codes: 4001 unauthorized, 4004 not found, 4008 too slow, 4029 too many streams of the user. A request without Upgrade: websocket is a 426.",
                id: "eventSocket",
                ok: string,
                okStatus: "101",
                okType: "application/octet-stream",
                parameters: [
                    conversationID,
                    parameter(
                        "latest_event_id",
                        in: "query",
                        lastEventID,
                        "The last event id the client has (-1 or empty: all)."
                    ),
                    parameter("api_key", in: "query", string, "The API key, for clients that cannot set headers."),
                ],
                errors: ["401", "404", "422", "426", "503"]
            )
        ],
        "/api/conversations/{id}/trajectory": [
            "get": operation(
                "Every event of the conversation",
                id: "trajectory",
                ok: ref("Trajectory"),
                parameters: [conversationID]
            )
        ],
        "/api/conversations/{id}/list-files": [
            "get": operation(
                "Names in a workspace directory, directories first (dir/)",
                id: "listFiles",
                ok: array(string),
                parameters: [
                    conversationID,
                    workspaceDirectory,
                ],
                errors: workspaceErrors
            )
        ],
        "/api/conversations/{id}/select-file": [
            "get": operation(
                "A text file's content",
                id: "selectFile",
                ok: object(["code": string], required: ["code"]),
                parameters: [
                    conversationID,
                    parameter(
                        "file",
                        in: "query",
                        ["type": "string", "minLength": 1],
                        "A file relative to the workspace.",
                        required: true
                    ),
                ],
                errors: workspaceErrors + ["415"]
            )
        ],
        "/api/conversations/{id}/upload-files": [
            "post": operation(
                "Upload files (multipart parts named files) into the workspace",
                id: "uploadFiles",
                ok: object(
                    [
                        "uploaded_files": array(string),
                        "skipped_files": array(
                            object(["name": string, "reason": string], required: ["name", "reason"])
                        ),
                    ],
                    required: ["uploaded_files", "skipped_files"]
                ),
                body: object(
                    ["files": array(["type": "string", "format": "binary"])],
                    description: "Parts named files, each with a file name; any other part is a 422."
                ),
                bodyType: "multipart/form-data",
                parameters: [
                    conversationID,
                    workspaceDirectory,
                ],
                errors: workspaceErrors + ["400", "413", "415"]
            )
        ],
        "/api/conversations/{id}/zip-directory": [
            "get": operation(
                "The workspace (or a directory of it) as a zip",
                id: "zipDirectory",
                ok: ["type": "string", "format": "binary"],
                okType: "application/zip",
                parameters: [
                    conversationID,
                    workspaceDirectory,
                ],
                errors: workspaceErrors + ["413"]
            )
        ],
        "/alive": [
            "get": operation(
                "Liveness",
                id: "alive",
                ok: object(["status": enumeration(["ok"])], required: ["status"]),
                errors: [],
                open: true
            )
        ],
        "/health": [
            "get": operation(
                "Whether RabbitMQ and PostgreSQL answer (503 when one does not)",
                id: "health",
                ok: ref("Health"),
                errors: [],
                open: true
            ).merging([
                "responses": [
                    "200": ["description": "Healthy", "content": content(ref("Health"))],
                    "503": ["description": "A dependency is unavailable", "content": content(ref("Health"))],
                ]
            ])
        ],
        "/metrics": [
            "get": operation(
                "Metrics in Prometheus' text format",
                id: "metrics",
                ok: string,
                okType: "text/plain",
                errors: [],
                open: true
            )
        ],
        "/openapi.json": [
            "get": operation("This document", id: "openapi", ok: ["type": "object"], errors: [], open: true)
        ],
    ]

    static let document: JSONValue = [
        "openapi": "3.1.0",
        "info": [
            "title": "Deckhand",
            "version": "0.1.0",
            "description":
                "OpenHands' V0 server API as Deckhand serves it. Differences from OpenHands: a missing (or another user's) conversation is a 404, not a 200 with null; unknown request fields are a 422; every error is {status, code, message}.",
        ],
        "servers": [["url": "/"]],
        "security": [["bearer": []]],
        "components": [
            "securitySchemes": [
                "bearer": [
                    "type": "http", "scheme": "bearer", "description": "An API key from `deckhand keys create`.",
                ]
            ],
            "schemas": .object(schemas),
        ],
        "paths": .object(paths),
    ]
}

extension JSONValue {
    /// This object with `other`'s keys set over it (objects only).
    fileprivate func merging(_ other: JSONValue) -> JSONValue {
        guard case .object(var mine) = self, case .object(let theirs) = other else { return self }
        for (key, value) in theirs { mine[key] = value }
        return .object(mine)
    }
}
