import ColoControl
import Testing

@Suite("QMPSession")
struct QMPSessionTests {
    let handler = FakeHandler()

    func makeSession(negotiated: Bool = false, maximumMessageBytes: Int = 64 * 1024) -> QMPSession {
        let session = QMPSession(handler: handler, maximumMessageBytes: maximumMessageBytes)
        if negotiated {
            let answers = session.receive(Array(#"{"execute": "qmp_capabilities"}"#.utf8) + [0x0A])
            #expect(answers == ["{\"return\": {}}\r\n"], "negotiation succeeds")
        }
        return session
    }

    func exchange(_ session: QMPSession, _ text: String) -> [JSONValue] {
        session.receive(Array(text.utf8)).map { parseLine($0) }
    }

    func error(_ errorClass: String, _ desc: String, id: JSONValue? = nil) -> JSONValue {
        var response: JSONObject = ["error": ["class": .string(errorClass), "desc": .string(desc)]]
        if let id { response["id"] = id }
        return .object(response)
    }

    @Test("the greeting names QMP with a version object and a capabilities array")
    func greeting() {
        let greeting = parseLine(makeSession().greetingLine)
        let qmp = greeting["QMP"]
        #expect(qmp?["version"]?.objectValue != nil, "version is an object: \(greeting)")
        #expect(qmp?["version"]?["qemu"]?["major"]?.integerValue != nil, "version.qemu.major: \(greeting)")
        #expect(qmp?["version"]?["package"] == "colo-proxy")
        #expect(qmp?["capabilities"] == [], "no capabilities offered (no oob): \(greeting)")
    }

    @Test("commands before negotiation are refused with CommandNotFound, then negotiation works once")
    func negotiation() {
        let session = makeSession()
        #expect(!session.isNegotiated)
        #expect(
            exchange(session, #"{"execute": "query-status", "id": 1}"#)
                == [error("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'", id: 1)])
        #expect(
            exchange(session, #"{"execute": "query-commands"}"#)
                == [error("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")])
        #expect(handler.calls.isEmpty, "nothing reached the handler before negotiation")

        #expect(
            exchange(session, #"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#)
                == [error("GenericError", "Capability 'oob' not available")])
        #expect(!session.isNegotiated, "a refused negotiation leaves the session unnegotiated")

        #expect(
            exchange(session, #"{"execute": "qmp_capabilities", "arguments": {"enable": []}, "id": "n"}"#)
                == [["return": [:], "id": "n"]])
        #expect(session.isNegotiated)
        #expect(
            exchange(session, #"{"execute": "qmp_capabilities"}"#)
                == [error("CommandNotFound", "Capabilities negotiation is already complete, command ignored")])
        #expect(
            exchange(session, #"{"execute": "query-status"}"#) == [
                ["return": ["status": "running", "role": "primary"]]
            ])
    }

    @Test("each SPEC §7 command reaches the handler with its arguments and returns its value")
    func routing() {
        let session = makeSession(negotiated: true)
        #expect(exchange(session, #"{"execute": "query-status"}"#)[0]["return"]?["status"] == "running")
        #expect(
            exchange(session, #"{"execute": "query-connections"}"#)[0]["return"] == [["proto": "tcp", "offset": 42]])
        #expect(exchange(session, #"{"execute": "query-stats", "arguments": {}}"#)[0]["return"]?["compared"] == 10)
        #expect(exchange(session, #"{"execute": "colo-checkpoint-done"}"#) == [["return": [:]]])
        #expect(exchange(session, #"{"execute": "x-colo-lost-heartbeat"}"#) == [["return": [:]]])
        #expect(
            exchange(session, #"{"execute": "filter-set-status", "arguments": {"id": "mirror0", "status": "off"}}"#)
                == [["return": [:]]])
        #expect(
            handler.calls.map(\.name) == [
                "query-status", "query-connections", "query-stats", "colo-checkpoint-done", "x-colo-lost-heartbeat",
                "filter-set-status",
            ])
        #expect(handler.calls.last?.arguments == ["id": "mirror0", "status": "off"])
    }

    @Test("arguments are checked against the schema, naming the argument at fault")
    func argumentErrors() {
        let session = makeSession(negotiated: true)
        #expect(
            exchange(session, #"{"execute": "filter-set-status", "arguments": {"status": "on"}, "id": 7}"#)
                == [error("GenericError", "Parameter 'id' is missing", id: 7)])
        #expect(
            exchange(session, #"{"execute": "filter-set-status", "arguments": {"id": 3, "status": "on"}}"#)
                == [error("GenericError", "Invalid parameter type for 'id', expected: string")])
        #expect(
            exchange(session, #"{"execute": "filter-set-status", "arguments": {"id": "a", "status": "on", "x": 1}}"#)
                == [error("GenericError", "Parameter 'x' is unexpected")])
        #expect(
            exchange(session, #"{"execute": "query-status", "arguments": {"verbose": true}}"#)
                == [error("GenericError", "Parameter 'verbose' is unexpected")])
        #expect(handler.calls.isEmpty, "schema errors never reach the handler")
        // Value errors come from the handler, with its own class.
        #expect(
            exchange(session, #"{"execute": "filter-set-status", "arguments": {"id": "a", "status": "maybe"}}"#)
                == [
                    error("GenericError", "Parameter 'status' does not accept value 'maybe' (expected one of: on, off)")
                ])
        #expect(
            exchange(session, #"{"execute": "filter-set-status", "arguments": {"id": "missing0", "status": "on"}}"#)
                == [error("DeviceNotFound", "No filter with id 'missing0'")])
    }

    @Test("malformed requests: unknown command, bad members, not an object")
    func malformedRequests() {
        let session = makeSession(negotiated: true)
        #expect(
            exchange(session, #"{"execute": "no-such-command", "id": "u"}"#)
                == [error("CommandNotFound", "The command no-such-command has not been found", id: "u")])
        #expect(exchange(session, #"{"arguments": {}}"#) == [error("GenericError", "QMP input lacks member 'execute'")])
        #expect(
            exchange(session, #"{"execute": 5}"#) == [
                error("GenericError", "QMP input member 'execute' must be a string")
            ])
        #expect(
            exchange(session, #"{"execute": "query-status", "arguments": []}"#)
                == [error("GenericError", "QMP input member 'arguments' must be an object")])
        #expect(
            exchange(session, #"{"execute": "query-status", "extra": 1}"#)
                == [error("GenericError", "QMP input member 'extra' is unexpected")])
        #expect(exchange(session, "[1, 2]") == [error("GenericError", "QMP input must be a JSON object")])
        #expect(exchange(session, "42 ") == [error("GenericError", "QMP input must be a JSON object")])
        #expect(exchange(session, #"{"exec-oob": "query-status"}"#)[0]["error"]?["class"] == "GenericError")
    }

    @Test("bad JSON is answered with a parse error and the session goes on")
    func badJSON() {
        let session = makeSession(negotiated: true)
        let answers = exchange(session, "{\"execute\": query-status}\n{\"execute\": \"query-status\"}\n")
        #expect(answers.count == 2, "one answer per message: \(answers)")
        #expect(answers.first?["error"]?["class"] == "GenericError")
        let desc = answers.first?["error"]?["desc"]?.stringValue ?? ""
        #expect(desc.hasPrefix("JSON parse error, "), "desc: \(desc)")
        #expect(answers.last?["return"]?["status"] == "running", "the next message is served")

        let junk = exchange(session, "garbage\n")
        #expect(junk.first?["error"]?["desc"]?.stringValue?.hasPrefix("JSON parse error, ") == true, "\(junk)")
    }

    @Test("the id member is echoed whatever its type, in answers and errors")
    func idEcho() {
        let session = makeSession(negotiated: true)
        for id in [#""abc""#, "17", "-1.5", #"{"seq": [1, 2]}"#, "null", "true"] {
            let answers = exchange(session, #"{"id": \#(id), "execute": "query-stats"}"#)
            #expect(answers.first?["id"] == (try? JSONValue.parse(id)), "id \(id) echoed: \(answers)")
            let errors = exchange(session, #"{"execute": "nope", "id": \#(id)}"#)
            #expect(errors.first?["id"] == (try? JSONValue.parse(id)), "id \(id) echoed in the error: \(errors)")
        }
        #expect(exchange(session, #"{"execute": "query-stats"}"#).first?["id"] == nil, "no id, none echoed")
    }

    @Test("several messages in one read get one answer each, in order")
    func severalPerRead() {
        let session = makeSession()
        let script =
            #"{"execute":"qmp_capabilities","id":1}{"execute":"query-status","id":2}  {"execute":"nope","id":3}"#
            + "\n" + #"{"execute":"query-stats","id":4}"#
        let answers = exchange(session, script)
        #expect(answers.map { $0["id"] } == [1, 2, 3, 4])
        #expect(answers[0]["return"] == .object([:]))
        #expect(answers[2]["error"]?["class"] == "CommandNotFound")
    }

    @Test("input split at every byte gives the same answers as one read")
    func splitAtEveryByte() {
        let script = Array(
            (#"{"execute": "qmp_capabilities"}"# + "\r\n"
                + #"{"execute": "filter-set-status", "arguments": {"id": "m{0}\"]", "status": "on"}, "id": "a}"}"#
                + #"{"execute": "query-status", "id": [1, {"x": "}"}]}"# + "\n  "
                + #"{"execute": "nope"}"# + "\n").utf8)
        let expected = makeSession().receive(script)
        #expect(expected.count == 4, "four answers: \(expected)")
        for cut in 0...script.count {
            let session = makeSession()
            let answers = session.receive(script[..<cut]) + session.receive(script[cut...])
            #expect(answers == expected, "split at byte \(cut)")
        }
        let bytewise = makeSession()
        var answers: [String] = []
        for byte in script { answers += bytewise.receive([byte]) }
        #expect(answers == expected, "fed one byte at a time")
    }

    @Test("an oversized message is refused without buffering it, and the session goes on")
    func oversized() {
        let session = makeSession(negotiated: true, maximumMessageBytes: 1024)
        var answers = session.receive(Array(#"{"execute": "query-status", "arguments": {"x": ""#.utf8))
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 4096)
        var maximumHeld = 0
        for _ in 0..<256 {  // 1 MiB of string content
            answers += session.receive(chunk)
            maximumHeld = max(maximumHeld, session.pendingInputBytes)
        }
        #expect(maximumHeld <= 1024, "held \(maximumHeld) bytes of a message over the 1024-byte limit")
        #expect(answers.count == 1, "one error for the oversized message: \(answers)")
        #expect(
            answers.map { parseLine($0) }
                == [error("GenericError", "JSON parse error, message longer than 1024 bytes (discarded)")])
        // Braces inside the discarded string must not confuse the scanner.
        answers = session.receive(Array("}{]\"}}\n{\"execute\": \"query-stats\", \"id\": 9}\n".utf8))
        #expect(answers.map { parseLine($0)["id"] } == [9], "the next message is served: \(answers)")
        #expect(handler.calls.map(\.name) == ["query-stats"], "the oversized command never ran")
    }

    @Test("a 0xFF byte discards a partial message")
    func resynchronise() {
        let session = makeSession(negotiated: true)
        var answers = session.receive(Array(#"{"execute": "query-status", "arguments": {"#.utf8) + [0xFF])
        answers += session.receive(Array(#"{"execute": "query-stats", "id": 1}"#.utf8))
        #expect(answers.map { parseLine($0)["id"] } == [1])
    }

    @Test("query-commands lists the built-in and the handler's commands; query-version answers the greeting's")
    func introspection() {
        let session = makeSession(negotiated: true)
        let names = exchange(session, #"{"execute": "query-commands"}"#).first?["return"]?.arrayValue?.compactMap {
            $0["name"]?.stringValue
        }
        #expect(names == ["qmp_capabilities", "query-commands", "query-version"] + ColoQMPSchema.commands.map(\.name))
        #expect(exchange(session, #"{"execute": "query-version"}"#) == [["return": QMPGreeting().version]])
    }

    @Test("events are formatted per the spec and withheld before negotiation")
    func events() {
        let event = QMPEvent(
            name: "DIVERGENCE", data: ["reason": "payload"], timestamp: QMPTimestamp(seconds: 12, microseconds: 34))
        #expect(makeSession().eventLine(event) == nil, "no events before negotiation")
        let line = makeSession(negotiated: true).eventLine(event) ?? ""
        #expect(
            parseLine(line)
                == [
                    "event": "DIVERGENCE", "data": ["reason": "payload"],
                    "timestamp": ["seconds": 12, "microseconds": 34],
                ])
        #expect(QMPEvent(name: "FAILOVER").json["data"] == nil, "no data member without data")
        let now = QMPTimestamp.now()
        #expect(now.seconds > 1_600_000_000 && (0..<1_000_000).contains(now.microseconds))
    }
}
