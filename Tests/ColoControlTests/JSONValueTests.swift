import ColoControl
import Testing

@Suite("JSONValue")
struct JSONValueTests {
    @Test("parses every kind of value, keeping object key order")
    func parsesValues() throws {
        let value = try JSONValue.parse(#" {"b": 1, "a": [true, false, null, -2.5e3, "x"], "c": {}} "#)
        #expect(value.objectValue?.keys == ["b", "a", "c"], "keys in source order")
        #expect(value["b"] == .integer(1))
        #expect(value["a"] == [true, false, nil, .double(-2500), "x"])
        #expect(value["c"] == .object([:]))
    }

    @Test("integers stay Int64, fractions and out-of-range integers become doubles")
    func numbers() throws {
        #expect(try JSONValue.parse("9223372036854775807") == .integer(Int64.max))
        #expect(try JSONValue.parse("-9223372036854775808") == .integer(Int64.min))
        #expect(try JSONValue.parse("18446744073709551615") == .double(18446744073709551616))
        #expect(try JSONValue.parse("1.0") == .double(1))
        #expect(try JSONValue.parse("0") == .integer(0))
        #expect(throws: JSONParseError.invalidNumber("01", offset: 0)) { try JSONValue.parse("01") }
        #expect(throws: JSONParseError.invalidNumber("1.", offset: 0)) { try JSONValue.parse("1.") }
        #expect(throws: JSONParseError.invalidNumber("-", offset: 0)) { try JSONValue.parse("-") }
        #expect(throws: JSONParseError.invalidNumber("1e999", offset: 0)) { try JSONValue.parse("1e999") }
    }

    @Test("string escapes, surrogate pairs and UTF-8 round-trip")
    func strings() throws {
        let parsed = try JSONValue.parse(#""a\"b\\c\/d\n\t\u00e9\ud83d\ude00é""#)
        #expect(parsed == .string("a\"b\\c/d\n\té😀é"))
        let text: JSONValue = .string("quote \" backslash \\ newline \n bell \u{07} é")
        #expect(text.description == #""quote \" backslash \\ newline \n bell \u0007 é""#)
        #expect(try JSONValue.parse(text.description) == text, "serialization parses back to the same value")
    }

    @Test("malformed input is rejected with the place it went wrong")
    func malformed() {
        #expect(throws: JSONParseError.unexpectedEnd) { try JSONValue.parse("") }
        #expect(throws: JSONParseError.unexpectedEnd) { try JSONValue.parse(#"{"a": 1"#) }
        #expect(throws: JSONParseError.unexpectedByte(UInt8(ascii: "}"), offset: 8)) {
            try JSONValue.parse(#"{"a": 1,}"#)
        }
        #expect(throws: JSONParseError.trailingData(offset: 3)) { try JSONValue.parse("{} {}") }
        #expect(throws: JSONParseError.invalidEscape(offset: 1)) { try JSONValue.parse(#""\x""#) }
        #expect(throws: JSONParseError.invalidEscape(offset: 1)) { try JSONValue.parse(#""\udc00""#) }
        #expect(throws: JSONParseError.controlCharacterInString(0x0A, offset: 2)) { try JSONValue.parse("\"a\nb\"") }
        #expect(throws: JSONParseError.invalidUTF8(offset: 0)) { try JSONValue.parse([0x22, 0xC3, 0x22]) }
        #expect(throws: JSONParseError.unexpectedByte(UInt8(ascii: "t"), offset: 2)) { try JSONValue.parse("trtrue") }
    }

    @Test("nesting deeper than the limit is refused instead of exhausting the stack")
    func nesting() throws {
        let limit = JSONParser.maximumDepth
        let ok = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(try JSONValue.parse(ok).arrayValue != nil)
        let deep = String(repeating: "[", count: 100_000)
        #expect(throws: JSONParseError.nestingTooDeep(limit: limit, offset: limit)) { try JSONValue.parse(deep) }
    }

    @Test("objects: duplicate keys keep the last value, equality ignores order, removal keeps order")
    func objects() throws {
        let parsed = try JSONValue.parse(#"{"a": 1, "b": 2, "a": 3}"#)
        #expect(parsed.objectValue?.keys == ["a", "b"])
        #expect(parsed["a"] == 3)
        #expect(JSONValue.object(["x": 1, "y": 2]) == JSONValue.object(["y": 2, "x": 1]))
        var object: JSONObject = ["p": 1, "q": 2, "r": 3]
        object["q"] = nil
        object["s"] = 4
        #expect(object.keys == ["p", "r", "s"])
        #expect(object["r"] == 3 && object["s"] == 4)
        #expect(object.description == #"{"p": 1, "r": 3, "s": 4}"#)
    }

    @Test("non-finite doubles serialize as null")
    func nonFinite() {
        #expect(JSONValue.double(.infinity).description == "null")
        #expect(JSONValue.double(0.5).description == "0.5")
    }
}
