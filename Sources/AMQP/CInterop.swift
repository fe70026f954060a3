import CRabbitMQ
import Foundation

/// C memory for one librabbitmq call: strings, tables and properties copied into `malloc`ed blocks that live
/// until ``reset()`` (CLIBS.md pitfall 6: an `amqp_bytes_t` must not point at a Swift temporary).
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit { reset() }

    func reset() {
        for block in blocks { free(block) }
        blocks.removeAll(keepingCapacity: true)
    }

    private func allocate(_ byteCount: Int) -> UnsafeMutableRawPointer {
        let block = malloc(max(byteCount, 1))!
        blocks.append(block)
        return block
    }

    func bytes(_ string: String) -> amqp_bytes_t {
        var string = string
        return string.withUTF8 { bytes(UnsafeRawBufferPointer($0)) }
    }

    func bytes(_ array: [UInt8]) -> amqp_bytes_t {
        array.withUnsafeBytes { bytes($0) }
    }

    func bytes(_ buffer: UnsafeRawBufferPointer) -> amqp_bytes_t {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return amqp_bytes_t(len: 0, bytes: nil) }
        let block = allocate(buffer.count)
        block.copyMemory(from: base, byteCount: buffer.count)
        return amqp_bytes_t(len: buffer.count, bytes: block)
    }

    func table(_ table: AMQPTable) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let entries = allocate(MemoryLayout<amqp_table_entry_t>.stride * table.count)
            .bindMemory(to: amqp_table_entry_t.self, capacity: table.count)
        for (index, (key, value)) in table.sorted(by: { $0.key < $1.key }).enumerated() {
            (entries + index).initialize(to: amqp_table_entry_t(key: bytes(key), value: field(value)))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    func field(_ value: AMQPFieldValue) -> amqp_field_value_t {
        var result = amqp_field_value_t()
        switch value {
        case .string(let string):
            result.kind = kind(AMQP_FIELD_KIND_UTF8)
            result.value.bytes = bytes(string)
        case .bytes(let array):
            result.kind = kind(AMQP_FIELD_KIND_BYTES)
            result.value.bytes = bytes(array)
        case .int(let int):
            result.kind = kind(AMQP_FIELD_KIND_I64)
            result.value.i64 = int
        case .bool(let bool):
            result.kind = kind(AMQP_FIELD_KIND_BOOLEAN)
            result.value.boolean = bool ? 1 : 0
        case .double(let double):
            result.kind = kind(AMQP_FIELD_KIND_F64)
            result.value.f64 = double
        case .timestamp(let date):
            result.kind = kind(AMQP_FIELD_KIND_TIMESTAMP)
            result.value.u64 = UInt64(max(0, date.timeIntervalSince1970))
        case .table(let nested):
            result.kind = kind(AMQP_FIELD_KIND_TABLE)
            result.value.table = table(nested)
        case .array(let values):
            result.kind = kind(AMQP_FIELD_KIND_ARRAY)
            let entries = allocate(MemoryLayout<amqp_field_value_t>.stride * max(values.count, 1))
                .bindMemory(to: amqp_field_value_t.self, capacity: max(values.count, 1))
            for (index, element) in values.enumerated() { (entries + index).initialize(to: field(element)) }
            result.value.array = amqp_array_t(num_entries: Int32(values.count), entries: entries)
        case .void:
            result.kind = kind(AMQP_FIELD_KIND_VOID)
        }
        return result
    }

    func properties(_ properties: AMQPProperties) -> amqp_basic_properties_t {
        var result = amqp_basic_properties_t()
        var flags: UInt32 = 0
        if let value = properties.contentType {
            result.content_type = bytes(value)
            flags |= UInt32(AMQP_BASIC_CONTENT_TYPE_FLAG)
        }
        if let value = properties.messageID {
            result.message_id = bytes(value)
            flags |= UInt32(AMQP_BASIC_MESSAGE_ID_FLAG)
        }
        if let value = properties.correlationID {
            result.correlation_id = bytes(value)
            flags |= UInt32(AMQP_BASIC_CORRELATION_ID_FLAG)
        }
        if let value = properties.type {
            result.type = bytes(value)
            flags |= UInt32(AMQP_BASIC_TYPE_FLAG)
        }
        if let value = properties.timestamp {
            result.timestamp = UInt64(max(0, value.timeIntervalSince1970))
            flags |= UInt32(AMQP_BASIC_TIMESTAMP_FLAG)
        }
        if let value = properties.replyTo {
            result.reply_to = bytes(value)
            flags |= UInt32(AMQP_BASIC_REPLY_TO_FLAG)
        }
        if let value = properties.expiration {
            result.expiration = bytes(value)
            flags |= UInt32(AMQP_BASIC_EXPIRATION_FLAG)
        }
        if !properties.headers.isEmpty {
            result.headers = table(properties.headers)
            flags |= UInt32(AMQP_BASIC_HEADERS_FLAG)
        }
        result.delivery_mode = properties.persistent ? 2 : 1
        flags |= UInt32(AMQP_BASIC_DELIVERY_MODE_FLAG)
        result._flags = flags
        return result
    }

    private func kind(_ kind: amqp_field_value_kind_t) -> UInt8 { UInt8(kind.rawValue) }
}

extension amqp_bytes_t {
    /// A copy of the bytes as a string (invalid UTF-8 is repaired).
    var string: String {
        guard let bytes, len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: len), as: UTF8.self)
    }

    /// A copy of the bytes.
    var array: [UInt8] {
        guard let bytes, len > 0 else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: bytes, count: len))
    }
}

/// Copies a C field table into Swift values.
func decodeTable(_ table: amqp_table_t) -> AMQPTable {
    guard let entries = table.entries, table.num_entries > 0 else { return [:] }
    var result: AMQPTable = [:]
    for index in 0..<Int(table.num_entries) {
        let entry = entries[index]
        result[entry.key.string] = decodeField(entry.value)
    }
    return result
}

func decodeField(_ field: amqp_field_value_t) -> AMQPFieldValue {
    switch UInt32(field.kind) {
    case AMQP_FIELD_KIND_UTF8.rawValue: return .string(field.value.bytes.string)
    case AMQP_FIELD_KIND_BYTES.rawValue: return .bytes(field.value.bytes.array)
    case AMQP_FIELD_KIND_BOOLEAN.rawValue: return .bool(field.value.boolean != 0)
    case AMQP_FIELD_KIND_I8.rawValue: return .int(Int64(field.value.i8))
    case AMQP_FIELD_KIND_U8.rawValue: return .int(Int64(field.value.u8))
    case AMQP_FIELD_KIND_I16.rawValue: return .int(Int64(field.value.i16))
    case AMQP_FIELD_KIND_U16.rawValue: return .int(Int64(field.value.u16))
    case AMQP_FIELD_KIND_I32.rawValue: return .int(Int64(field.value.i32))
    case AMQP_FIELD_KIND_U32.rawValue: return .int(Int64(field.value.u32))
    case AMQP_FIELD_KIND_I64.rawValue: return .int(field.value.i64)
    case AMQP_FIELD_KIND_U64.rawValue: return .int(Int64(truncatingIfNeeded: field.value.u64))
    case AMQP_FIELD_KIND_F32.rawValue: return .double(Double(field.value.f32))
    case AMQP_FIELD_KIND_F64.rawValue: return .double(field.value.f64)
    case AMQP_FIELD_KIND_TIMESTAMP.rawValue:
        return .timestamp(Date(timeIntervalSince1970: TimeInterval(field.value.u64)))
    case AMQP_FIELD_KIND_TABLE.rawValue: return .table(decodeTable(field.value.table))
    case AMQP_FIELD_KIND_ARRAY.rawValue:
        let array = field.value.array
        guard let entries = array.entries, array.num_entries > 0 else { return .array([]) }
        return .array((0..<Int(array.num_entries)).map { decodeField(entries[$0]) })
    case AMQP_FIELD_KIND_DECIMAL.rawValue:
        let decimal = field.value.decimal
        return .double(Double(decimal.value) / pow(10, Double(decimal.decimals)))
    default: return .void
    }
}

/// Copies C basic properties into Swift values.
func decodeProperties(_ properties: amqp_basic_properties_t) -> AMQPProperties {
    let flags = properties._flags
    func has(_ flag: Int32) -> Bool { flags & UInt32(flag) != 0 }
    return AMQPProperties(
        contentType: has(AMQP_BASIC_CONTENT_TYPE_FLAG) ? properties.content_type.string : nil,
        messageID: has(AMQP_BASIC_MESSAGE_ID_FLAG) ? properties.message_id.string : nil,
        correlationID: has(AMQP_BASIC_CORRELATION_ID_FLAG) ? properties.correlation_id.string : nil,
        type: has(AMQP_BASIC_TYPE_FLAG) ? properties.type.string : nil,
        timestamp: has(AMQP_BASIC_TIMESTAMP_FLAG)
            ? Date(timeIntervalSince1970: TimeInterval(properties.timestamp)) : nil,
        replyTo: has(AMQP_BASIC_REPLY_TO_FLAG) ? properties.reply_to.string : nil,
        persistent: has(AMQP_BASIC_DELIVERY_MODE_FLAG) && properties.delivery_mode == 2,
        expiration: has(AMQP_BASIC_EXPIRATION_FLAG) ? properties.expiration.string : nil,
        headers: has(AMQP_BASIC_HEADERS_FLAG) ? decodeTable(properties.headers) : [:]
    )
}

/// librabbitmq's text for a status code.
func amqpErrorString(_ status: Int32) -> String {
    String(cString: amqp_error_string2(status))
}
