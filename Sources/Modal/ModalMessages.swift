import GRPC

// The messages of Modal's API (package `modal.client`) that the `modal` backend sends and reads, written by hand
// from their field tables (docs: ../shared/MODAL.md §2; checked field by field against `modal_proto` of the
// `modal` package 1.6.4 by the golden-bytes tests). Only the fields Deckhand uses are here: the rest are skipped
// when read and never written.

/// `ObjectCreationType`.
public enum ObjectCreationType: Int32, Sendable {
    case unspecified = 0
    case createIfMissing = 1
    case ephemeral = 5
}

/// `GenericResult`: how a build, a task or a sandbox ended.
public struct GenericResult: ProtobufMessage, Equatable {
    /// `GenericResult.GenericStatus`.
    public enum Status: Int32, Sendable {
        case unspecified = 0
        case success = 1
        case failure = 2
        case terminated = 3
        case timeout = 4
        case initFailure = 5
        case internalFailure = 6
        case idleTimeout = 7
        case memoryManagerEviction = 8
        case unknownValue = -1
    }

    public var status: Status = .unspecified
    public var exception = ""
    /// May be negative (−1 for a terminated sandbox): a 10-byte varint on the wire.
    public var exitCode: Int32 = 0
    public var traceback = ""

    public init() {}

    public init(status: Status, exception: String = "", exitCode: Int32 = 0) {
        self.status = status
        self.exception = exception
        self.exitCode = exitCode
    }

    public func encode(to writer: inout ProtobufWriter) {
        writer.int32(1, status.rawValue)
        writer.string(2, exception)
        writer.int32(3, exitCode)
        writer.string(4, traceback)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: status = Status(rawValue: try field.int32) ?? .unknownValue
        case 2: exception = try field.string
        case 3: exitCode = try field.int32
        case 4: traceback = try field.string
        default: break
        }
    }
}

/// `AppGetOrCreateRequest`.
public struct AppGetOrCreateRequest: ProtobufMessage, Equatable {
    public var appName = ""
    public var environmentName = ""
    public var objectCreationType: ObjectCreationType = .unspecified

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, appName)
        writer.string(2, environmentName)
        writer.int32(3, objectCreationType.rawValue)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: appName = try field.string
        case 2: environmentName = try field.string
        case 3: objectCreationType = ObjectCreationType(rawValue: try field.int32) ?? .unspecified
        default: break
        }
    }
}

/// `AppGetOrCreateResponse`.
public struct AppGetOrCreateResponse: ProtobufMessage, Equatable {
    public var appID = ""

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, appID)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        if field.number == 1 { appID = try field.string }
    }
}

/// `EnvironmentGetOrCreateRequest`: the environment's settings (its image builder version).
public struct EnvironmentGetOrCreateRequest: ProtobufMessage, Equatable {
    public var deploymentName = ""

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, deploymentName)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        if field.number == 1 { deploymentName = try field.string }
    }
}

/// `EnvironmentGetOrCreateResponse`, down to `metadata.settings.image_builder_version`.
public struct EnvironmentGetOrCreateResponse: ProtobufMessage, Equatable {
    public var environmentID = ""
    public var imageBuilderVersion = ""

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, environmentID)
        var settings = ProtobufWriter()
        settings.string(1, imageBuilderVersion)
        var metadata = ProtobufWriter()
        if !settings.bytes.isEmpty { metadata.lengthDelimited(2, settings.bytes) }
        if !metadata.bytes.isEmpty { writer.lengthDelimited(2, metadata.bytes) }
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: environmentID = try field.string
        case 2:
            var metadata = ProtobufReader(try field.bytes)
            while let inner = try metadata.next() {
                guard inner.number == 2 else { continue }
                var settings = ProtobufReader(try inner.bytes)
                while let setting = try settings.next() {
                    if setting.number == 1 { imageBuilderVersion = try setting.string }
                }
            }
        default: break
        }
    }
}

/// `ImageGetOrCreateRequest` for an image from a registry tag: `Image{dockerfile_commands: ["FROM <tag>"]}`.
public struct ImageGetOrCreateRequest: ProtobufMessage, Equatable {
    public var dockerfileCommands: [String] = []
    public var appID = ""
    public var builderVersion = ""

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        var image = ProtobufWriter()
        image.strings(6, dockerfileCommands)
        writer.lengthDelimited(2, image.bytes)
        writer.string(4, appID)
        writer.string(9, builderVersion)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 2:
            var image = ProtobufReader(try field.bytes)
            while let inner = try image.next() {
                if inner.number == 6 { dockerfileCommands.append(try inner.string) }
            }
        case 4: appID = try field.string
        case 9: builderVersion = try field.string
        default: break
        }
    }
}

/// `ImageGetOrCreateResponse`: `result` is set only once the build has ended.
public struct ImageGetOrCreateResponse: ProtobufMessage, Equatable {
    public var imageID = ""
    public var result: GenericResult?

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, imageID)
        writer.message(2, result)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: imageID = try field.string
        case 2: result = try field.message()
        default: break
        }
    }
}

/// `ImageJoinStreamingRequest`: long-polls a build (`timeout` seconds), from the last entry seen.
public struct ImageJoinStreamingRequest: ProtobufMessage, Equatable {
    public var imageID = ""
    public var timeout: Float = 0
    public var lastEntryID = ""

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, imageID)
        writer.float(2, timeout)
        writer.string(3, lastEntryID)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: imageID = try field.string
        case 2: timeout = try field.float
        case 3: lastEntryID = try field.string
        default: break
        }
    }
}

/// `ImageJoinStreamingResponse` (logs are skipped).
public struct ImageJoinStreamingResponse: ProtobufMessage, Equatable {
    public var result: GenericResult?
    public var entryID = ""
    public var eof = false

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.message(1, result)
        writer.string(3, entryID)
        writer.bool(4, eof)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: result = try field.message()
        case 3: entryID = try field.string
        case 4: eof = try field.bool
        default: break
        }
    }
}

/// `SecretGetOrCreateRequest` for an ephemeral secret made of the sandbox's environment.
public struct SecretGetOrCreateRequest: ProtobufMessage, Equatable {
    public var environmentName = ""
    public var objectCreationType: ObjectCreationType = .unspecified
    public var environment: [String: String] = [:]

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(3, environmentName)
        writer.int32(4, objectCreationType.rawValue)
        writer.stringMap(5, environment)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 3: environmentName = try field.string
        case 4: objectCreationType = ObjectCreationType(rawValue: try field.int32) ?? .unspecified
        case 5:
            let entry = try field.stringMapEntry
            environment[entry.key] = entry.value
        default: break
        }
    }
}

/// `SecretGetOrCreateResponse`.
public struct SecretGetOrCreateResponse: ProtobufMessage, Equatable {
    public var secretID = ""

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, secretID)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        if field.number == 1 { secretID = try field.string }
    }
}

/// `SandboxTag`.
public struct SandboxTag: ProtobufMessage, Equatable {
    public var name = ""
    public var value = ""

    public init() {}

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, name)
        writer.string(2, value)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: name = try field.string
        case 2: value = try field.string
        default: break
        }
    }
}

/// `PortSpec`: a port of the sandbox opened through a tunnel (TLS-encrypted unless `unencrypted`).
public struct PortSpec: ProtobufMessage, Equatable {
    public var port: UInt32 = 0
    public var unencrypted = false

    public init() {}

    public init(port: UInt32) {
        self.port = port
    }

    public func encode(to writer: inout ProtobufWriter) {
        writer.uint32(1, port)
        writer.bool(2, unencrypted)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: port = try field.uint32
        case 2: unencrypted = try field.bool
        default: break
        }
    }
}

/// `Sandbox`: the definition of a sandbox (the fields Deckhand sets).
public struct SandboxDefinition: ProtobufMessage, Equatable {
    /// The command and its arguments.
    public var entrypointArgs: [String] = []
    public var imageID = ""
    public var secretIDs: [String] = []
    /// `Resources`: memory in MiB and CPU in thousandths of a core, requested and at most.
    public var memoryMB: UInt32 = 0
    public var milliCPU: UInt32 = 0
    public var memoryMBMax: UInt32 = 0
    public var milliCPUMax: UInt32 = 0
    public var timeoutSeconds: UInt32 = 0
    public var workdir: String?
    /// `open_ports` (`PortSpecs{ports = 1}`).
    public var openPorts: [PortSpec] = []
    public var idleTimeoutSeconds: UInt32?

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.strings(1, entrypointArgs)
        writer.string(3, imageID)
        writer.strings(4, secretIDs)
        var resources = ProtobufWriter()
        resources.uint32(2, memoryMB)
        resources.uint32(3, milliCPU)
        resources.uint32(5, memoryMBMax)
        resources.uint32(7, milliCPUMax)
        writer.lengthDelimited(5, resources.bytes)
        writer.uint32(7, timeoutSeconds)
        writer.optionalString(8, workdir)
        if !openPorts.isEmpty {
            var ports = ProtobufWriter()
            ports.messages(1, openPorts)
            writer.lengthDelimited(20, ports.bytes)
        }
        writer.optionalUInt32(33, idleTimeoutSeconds)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: entrypointArgs.append(try field.string)
        case 3: imageID = try field.string
        case 4: secretIDs.append(try field.string)
        case 5:
            var resources = ProtobufReader(try field.bytes)
            while let inner = try resources.next() {
                switch inner.number {
                case 2: memoryMB = try inner.uint32
                case 3: milliCPU = try inner.uint32
                case 5: memoryMBMax = try inner.uint32
                case 7: milliCPUMax = try inner.uint32
                default: break
                }
            }
        case 7: timeoutSeconds = try field.uint32
        case 8: workdir = try field.string
        case 20:
            var ports = ProtobufReader(try field.bytes)
            while let inner = try ports.next() {
                if inner.number == 1 { openPorts.append(try inner.message()) }
            }
        case 33: idleTimeoutSeconds = try field.uint32
        default: break
        }
    }
}

/// `SandboxCreateRequest`.
public struct SandboxCreateRequest: ProtobufMessage, Equatable {
    public var appID = ""
    public var definition = SandboxDefinition()
    public var tags: [SandboxTag] = []

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, appID)
        writer.message(2, definition)
        writer.messages(4, tags)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: appID = try field.string
        case 2: definition = try field.message()
        case 4: tags.append(try field.message())
        default: break
        }
    }
}

/// `SandboxCreateResponse`.
public struct SandboxCreateResponse: ProtobufMessage, Equatable {
    public var sandboxID = ""

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, sandboxID)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        if field.number == 1 { sandboxID = try field.string }
    }
}

/// The requests that name one sandbox and long-poll for up to `timeout` seconds: `SandboxGetTunnelsRequest`,
/// `SandboxWaitRequest` (no timeout: it does not wait), `SandboxGetTaskIdRequest` and `SandboxTerminateRequest`
/// (no timeout).
public struct SandboxRequest: ProtobufMessage, Equatable {
    public var sandboxID = ""
    public var timeout: Float?

    public init() {}

    public init(_ sandboxID: String, timeout: Float? = nil) {
        self.sandboxID = sandboxID
        self.timeout = timeout
    }

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, sandboxID)
        // A zero timeout is left out, as the requests whose `timeout` has no explicit presence want.
        if let timeout { writer.float(2, timeout) }
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: sandboxID = try field.string
        case 2: timeout = try field.float
        default: break
        }
    }
}

/// `SandboxGetTaskIdResponse`: the task once the sandbox is scheduled; its result if it has already ended.
public struct SandboxGetTaskIDResponse: ProtobufMessage, Equatable {
    public var taskID: String?
    public var taskResult: GenericResult?

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.optionalString(1, taskID)
        writer.message(2, taskResult)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: taskID = try field.string
        case 2: taskResult = try field.message()
        default: break
        }
    }
}

/// `TunnelData`: where a port of the sandbox is reached.
public struct TunnelData: ProtobufMessage, Equatable {
    public var host = ""
    public var port: UInt32 = 0
    public var containerPort: UInt32 = 0

    public init() {}

    public init(host: String, port: UInt32, containerPort: UInt32) {
        self.host = host
        self.port = port
        self.containerPort = containerPort
    }

    /// `https://host` on port 443, else `https://host:port`.
    public var url: String { port == 443 ? "https://\(host)" : "https://\(host):\(port)" }

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, host)
        writer.uint32(2, port)
        writer.uint32(5, containerPort)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: host = try field.string
        case 2: port = try field.uint32
        case 5: containerPort = try field.uint32
        default: break
        }
    }
}

/// `SandboxGetTunnelsResponse`: `result.status` TIMEOUT means not yet.
public struct SandboxGetTunnelsResponse: ProtobufMessage, Equatable {
    public var result: GenericResult?
    public var tunnels: [TunnelData] = []

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.message(1, result)
        writer.messages(2, tunnels)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: result = try field.message()
        case 2: tunnels.append(try field.message())
        default: break
        }
    }
}

/// `SandboxWaitResponse` (`result` unset while the sandbox runs) and `SandboxTerminateResponse`
/// (`existing_result`, set when it had already ended): one field 1 each.
public struct SandboxResultResponse: ProtobufMessage, Equatable {
    public var result: GenericResult?

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.message(1, result)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        if field.number == 1 { result = try field.message() }
    }
}

/// `SandboxListRequest`: the app's sandboxes carrying every tag given (running ones unless `include_finished`).
public struct SandboxListRequest: ProtobufMessage, Equatable {
    public var appID = ""
    /// Seconds since 1970: only sandboxes created before it (paging backwards).
    public var beforeTimestamp: Double = 0
    public var environmentName = ""
    public var includeFinished = false
    public var tags: [SandboxTag] = []

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, appID)
        writer.double(2, beforeTimestamp)
        writer.string(3, environmentName)
        writer.bool(4, includeFinished)
        writer.messages(5, tags)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: appID = try field.string
        case 2: beforeTimestamp = try field.double
        case 3: environmentName = try field.string
        case 4: includeFinished = try field.bool
        case 5: tags.append(try field.message())
        default: break
        }
    }
}

/// `SandboxInfo`, as listed.
public struct SandboxInfo: ProtobufMessage, Equatable {
    public var id = ""
    public var createdAt: Double = 0
    /// `task_info.result`: set when the sandbox's task has ended.
    public var taskResult: GenericResult?
    public var tags: [SandboxTag] = []

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.string(1, id)
        writer.double(3, createdAt)
        if let taskResult {
            var task = ProtobufWriter()
            task.message(4, taskResult)
            writer.lengthDelimited(4, task.bytes)
        }
        writer.messages(6, tags)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        switch field.number {
        case 1: id = try field.string
        case 3: createdAt = try field.double
        case 4:
            var task = ProtobufReader(try field.bytes)
            while let inner = try task.next() {
                if inner.number == 4 { taskResult = try inner.message() }
            }
        case 6: tags.append(try field.message())
        default: break
        }
    }
}

/// `SandboxListResponse`.
public struct SandboxListResponse: ProtobufMessage, Equatable {
    public var sandboxes: [SandboxInfo] = []

    public init() {}

    public func encode(to writer: inout ProtobufWriter) {
        writer.messages(1, sandboxes)
    }

    public mutating func decode(_ field: ProtobufField) throws {
        if field.number == 1 { sandboxes.append(try field.message()) }
    }
}
