/// A JSON value as QMP exchanges it: objects keep their keys in order, numbers stay integers when written as integers.
///
/// Integers that fit in `Int64` parse as ``integer(_:)``; fractions, exponents and larger integers parse as
/// ``double(_:)``. Equality of objects ignores key order (JSON objects are unordered); equality of numbers does not
/// mix the two cases (`.integer(1) != .double(1)`).
public enum JSONValue: Sendable, Equatable {
    case object(JSONObject)
    case array([JSONValue])
    case string(String)
    case integer(Int64)
    case double(Double)
    case bool(Bool)
    case null

    /// The object's members, or nil when this is not an object.
    public var objectValue: JSONObject? {
        if case .object(let object) = self { return object }
        return nil
    }

    /// The array's elements, or nil when this is not an array.
    public var arrayValue: [JSONValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// The string, or nil when this is not a string.
    public var stringValue: String? {
        if case .string(let string) = self { return string }
        return nil
    }

    /// The integer, or nil when this is not an integer (a double with an integral value is not one).
    public var integerValue: Int64? {
        if case .integer(let integer) = self { return integer }
        return nil
    }

    /// The number as a double, for either kind of number; nil otherwise.
    public var doubleValue: Double? {
        switch self {
        case .integer(let integer): return Double(integer)
        case .double(let double): return double
        default: return nil
        }
    }

    /// The boolean, or nil when this is not a boolean.
    public var boolValue: Bool? {
        if case .bool(let bool) = self { return bool }
        return nil
    }

    /// Whether this is JSON `null`.
    public var isNull: Bool { self == .null }

    /// The member named `key` when this is an object, nil otherwise (or when it has no such member).
    public subscript(key: String) -> JSONValue? { objectValue?[key] }

    /// The name of this value's JSON type, as QMP's error messages spell types ("string", "object", ...).
    public var typeName: String {
        switch self {
        case .object: return "object"
        case .array: return "array"
        case .string: return "string"
        case .integer: return "integer"
        case .double: return "number"
        case .bool: return "boolean"
        case .null: return "null"
        }
    }

    /// Parses one JSON text (surrounding whitespace allowed). See ``JSONParser``.
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONParseError) -> JSONValue {
        try JSONParser.parse(Array(bytes))
    }

    /// Parses one JSON text from a string.
    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        try JSONParser.parse(Array(text.utf8))
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByNilLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(JSONObject(elements))
    }
}

/// A JSON object: members in insertion order, looked up by key. Setting an existing key replaces its value in
/// place (so a parsed object with a duplicated key keeps the last value, at the first position).
public struct JSONObject: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral {
    /// The members in order.
    public private(set) var members: [(key: String, value: JSONValue)] = []
    private var positions: [String: Int] = [:]

    public init() {}

    /// An object with these members in this order (a repeated key keeps its last value).
    public init(_ members: some Sequence<(String, JSONValue)>) {
        for (key, value) in members { self[key] = value }
    }

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self.init(elements)
    }

    /// The member's value; assigning nil removes the member.
    public subscript(key: String) -> JSONValue? {
        get {
            guard let position = positions[key] else { return nil }
            return members[position].value
        }
        set {
            if let position = positions[key] {
                if let newValue {
                    members[position].value = newValue
                } else {
                    members.remove(at: position)
                    positions[key] = nil
                    for index in position..<members.count { positions[members[index].key] = index }
                }
            } else if let newValue {
                positions[key] = members.count
                members.append((key: key, value: newValue))
            }
        }
    }

    /// The keys in order.
    public var keys: [String] { members.map(\.key) }
    public var count: Int { members.count }
    public var isEmpty: Bool { members.isEmpty }

    public func makeIterator() -> IndexingIterator<[(key: String, value: JSONValue)]> {
        members.makeIterator()
    }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        guard lhs.members.count == rhs.members.count else { return false }
        for (key, value) in lhs.members where rhs[key] != value { return false }
        return true
    }
}

// MARK: Serialization

extension JSONValue: CustomStringConvertible {
    /// The value as compact one-line JSON (`{"a": 1, "b": [true, null]}`); non-ASCII text is written as UTF-8,
    /// control characters escaped; non-finite doubles, which JSON cannot express, are written as `null`.
    public var description: String {
        var output = ""
        JSONValue.write(self, to: &output)
        return output
    }

    /// The same text as ``description``, as UTF-8 bytes.
    public var serialized: [UInt8] { Array(description.utf8) }

    static func write(_ value: JSONValue, to output: inout String) {
        switch value {
        case .object(let object):
            output += "{"
            var first = true
            for (key, member) in object {
                if !first { output += ", " }
                first = false
                writeString(key, to: &output)
                output += ": "
                write(member, to: &output)
            }
            output += "}"
        case .array(let elements):
            output += "["
            for (index, element) in elements.enumerated() {
                if index > 0 { output += ", " }
                write(element, to: &output)
            }
            output += "]"
        case .string(let string):
            writeString(string, to: &output)
        case .integer(let integer):
            output += String(integer)
        case .double(let double):
            output += double.isFinite ? String(double) : "null"
        case .bool(let bool):
            output += bool ? "true" : "false"
        case .null:
            output += "null"
        }
    }

    private static let hexDigits: [Character] = Array("0123456789abcdef")

    static func writeString(_ string: String, to output: inout String) {
        output += "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case "\u{08}": output += "\\b"
            case "\u{0C}": output += "\\f"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    let value = Int(scalar.value)
                    output += "\\u00"
                    output.append(hexDigits[value >> 4])
                    output.append(hexDigits[value & 0xF])
                } else {
                    output.unicodeScalars.append(scalar)
                }
            }
        }
        output += "\""
    }
}

extension JSONObject: CustomStringConvertible {
    public var description: String { JSONValue.object(self).description }
}
