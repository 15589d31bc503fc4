/// Why a JSON text could not be parsed, with the byte offset where the parser stopped.
public enum JSONParseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The text ended inside a value (or was empty).
    case unexpectedEnd
    /// A byte that cannot start or continue a value here.
    case unexpectedByte(UInt8, offset: Int)
    /// A number that does not follow JSON's grammar, or a double out of range.
    case invalidNumber(String, offset: Int)
    /// A backslash escape that is not one of JSON's, or a `\u` escape naming a lone surrogate.
    case invalidEscape(offset: Int)
    /// A raw control character (below 0x20) inside a string.
    case controlCharacterInString(UInt8, offset: Int)
    /// A string whose bytes are not valid UTF-8.
    case invalidUTF8(offset: Int)
    /// Objects and arrays nested deeper than the limit (which keeps a hostile input from exhausting the stack).
    case nestingTooDeep(limit: Int, offset: Int)
    /// Something other than whitespace after the value.
    case trailingData(offset: Int)

    public var description: String {
        switch self {
        case .unexpectedEnd:
            return "unexpected end of input"
        case .unexpectedByte(let byte, let offset):
            let shown = byte >= 0x20 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : "byte \(byte)"
            return "unexpected \(shown) at offset \(offset)"
        case .invalidNumber(let text, let offset):
            return "invalid number '\(text)' at offset \(offset)"
        case .invalidEscape(let offset):
            return "invalid escape sequence at offset \(offset)"
        case .controlCharacterInString(let byte, let offset):
            return "control character \(byte) in string at offset \(offset)"
        case .invalidUTF8(let offset):
            return "invalid UTF-8 in string starting at offset \(offset)"
        case .nestingTooDeep(let limit, let offset):
            return "nesting deeper than \(limit) levels at offset \(offset)"
        case .trailingData(let offset):
            return "unexpected data after the value at offset \(offset)"
        }
    }
}

/// A strict RFC 8259 parser producing ``JSONValue``s: no comments, no trailing commas, no single quotes, strings must
/// be valid UTF-8; nesting is limited to ``maximumDepth`` levels.
public struct JSONParser {
    /// How deep objects and arrays may nest.
    public static let maximumDepth = 128

    private let bytes: [UInt8]
    private var offset = 0

    private init(bytes: [UInt8]) { self.bytes = bytes }

    /// Parses exactly one JSON value, optionally surrounded by whitespace.
    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        if parser.offset < bytes.count { throw .trailingData(offset: parser.offset) }
        return value
    }

    private mutating func skipWhitespace() {
        while offset < bytes.count {
            switch bytes[offset] {
            case 0x20, 0x09, 0x0A, 0x0D: offset += 1
            default: return
            }
        }
    }

    private func peek() throws(JSONParseError) -> UInt8 {
        guard offset < bytes.count else { throw .unexpectedEnd }
        return bytes[offset]
    }

    private mutating func expect(_ byte: UInt8) throws(JSONParseError) {
        let found = try peek()
        guard found == byte else { throw .unexpectedByte(found, offset: offset) }
        offset += 1
    }

    private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        let byte = try peek()
        switch byte {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try parseLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try parseLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try parseLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw .unexpectedByte(byte, offset: offset)
        }
    }

    private mutating func parseLiteral(_ literal: StaticString) throws(JSONParseError) {
        let expected = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        for byte in expected {
            let found = try peek()
            guard found == byte else { throw .unexpectedByte(found, offset: offset) }
            offset += 1
        }
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        if depth > JSONParser.maximumDepth { throw .nestingTooDeep(limit: JSONParser.maximumDepth, offset: offset) }
        offset += 1  // "{"
        var object = JSONObject()
        skipWhitespace()
        if try peek() == UInt8(ascii: "}") {
            offset += 1
            return .object(object)
        }
        while true {
            skipWhitespace()
            let keyByte = try peek()
            guard keyByte == UInt8(ascii: "\"") else { throw .unexpectedByte(keyByte, offset: offset) }
            let key = try parseString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            object[key] = try parseValue(depth: depth)
            skipWhitespace()
            let separator = try peek()
            offset += 1
            if separator == UInt8(ascii: "}") { return .object(object) }
            guard separator == UInt8(ascii: ",") else { throw .unexpectedByte(separator, offset: offset - 1) }
        }
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        if depth > JSONParser.maximumDepth { throw .nestingTooDeep(limit: JSONParser.maximumDepth, offset: offset) }
        offset += 1  // "["
        var elements: [JSONValue] = []
        skipWhitespace()
        if try peek() == UInt8(ascii: "]") {
            offset += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth))
            skipWhitespace()
            let separator = try peek()
            offset += 1
            if separator == UInt8(ascii: "]") { return .array(elements) }
            guard separator == UInt8(ascii: ",") else { throw .unexpectedByte(separator, offset: offset - 1) }
        }
    }

    private mutating func parseString() throws(JSONParseError) -> String {
        let start = offset
        offset += 1  // opening quote
        var utf8: [UInt8] = []
        while true {
            let byte = try peek()
            switch byte {
            case UInt8(ascii: "\""):
                offset += 1
                guard let string = String(validating: utf8, as: UTF8.self) else { throw .invalidUTF8(offset: start) }
                return string
            case UInt8(ascii: "\\"):
                try parseEscape(into: &utf8)
            case 0..<0x20:
                throw .controlCharacterInString(byte, offset: offset)
            default:
                utf8.append(byte)
                offset += 1
            }
        }
    }

    private mutating func parseEscape(into utf8: inout [UInt8]) throws(JSONParseError) {
        let escapeOffset = offset
        offset += 1  // backslash
        let byte = try peek()
        offset += 1
        switch byte {
        case UInt8(ascii: "\""): utf8.append(UInt8(ascii: "\""))
        case UInt8(ascii: "\\"): utf8.append(UInt8(ascii: "\\"))
        case UInt8(ascii: "/"): utf8.append(UInt8(ascii: "/"))
        case UInt8(ascii: "b"): utf8.append(0x08)
        case UInt8(ascii: "f"): utf8.append(0x0C)
        case UInt8(ascii: "n"): utf8.append(0x0A)
        case UInt8(ascii: "r"): utf8.append(0x0D)
        case UInt8(ascii: "t"): utf8.append(0x09)
        case UInt8(ascii: "u"):
            var value = try parseHex4(escapeOffset: escapeOffset)
            if (0xD800..<0xDC00).contains(value) {
                // A high surrogate must be followed by an escaped low surrogate.
                guard offset + 1 < bytes.count, bytes[offset] == UInt8(ascii: "\\"),
                    bytes[offset + 1] == UInt8(ascii: "u")
                else { throw .invalidEscape(offset: escapeOffset) }
                offset += 2
                let low = try parseHex4(escapeOffset: escapeOffset)
                guard (0xDC00..<0xE000).contains(low) else { throw .invalidEscape(offset: escapeOffset) }
                value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(value) {
                throw .invalidEscape(offset: escapeOffset)
            }
            guard let scalar = Unicode.Scalar(value) else { throw .invalidEscape(offset: escapeOffset) }
            utf8.append(contentsOf: String(Character(scalar)).utf8)
        default:
            throw .invalidEscape(offset: escapeOffset)
        }
    }

    private mutating func parseHex4(escapeOffset: Int) throws(JSONParseError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = try peek()
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw .invalidEscape(offset: escapeOffset)
            }
            value = value << 4 | UInt32(digit)
            offset += 1
        }
        return value
    }

    private mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = offset
        var isInteger = true
        if bytes[offset] == UInt8(ascii: "-") { offset += 1 }
        // Integer part: "0" alone, or a non-zero digit followed by digits.
        let integerStart = offset
        let digitCount = skipDigits()
        if digitCount == 0 || (digitCount > 1 && bytes[integerStart] == UInt8(ascii: "0")) {
            throw .invalidNumber(numberText(from: start), offset: start)
        }
        if offset < bytes.count && bytes[offset] == UInt8(ascii: ".") {
            isInteger = false
            offset += 1
            if skipDigits() == 0 { throw .invalidNumber(numberText(from: start), offset: start) }
        }
        if offset < bytes.count && (bytes[offset] == UInt8(ascii: "e") || bytes[offset] == UInt8(ascii: "E")) {
            isInteger = false
            offset += 1
            if offset < bytes.count && (bytes[offset] == UInt8(ascii: "+") || bytes[offset] == UInt8(ascii: "-")) {
                offset += 1
            }
            if skipDigits() == 0 { throw .invalidNumber(numberText(from: start), offset: start) }
        }
        let text = numberText(from: start)
        if isInteger, let integer = Int64(text) { return .integer(integer) }
        guard let double = Double(text), double.isFinite else { throw .invalidNumber(text, offset: start) }
        return .double(double)
    }

    private mutating func skipDigits() -> Int {
        let start = offset
        while offset < bytes.count && bytes[offset] >= UInt8(ascii: "0") && bytes[offset] <= UInt8(ascii: "9") {
            offset += 1
        }
        return offset - start
    }

    private func numberText(from start: Int) -> String {
        String(decoding: bytes[start..<max(offset, start)], as: UTF8.self)
    }
}
