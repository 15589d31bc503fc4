import ArgumentParser
import ColoCLI
import ColoControl
import ColoTestSupport
import Foundation
import Synchronization
import Testing

final class CallLog: Sendable {
    private let recorded = Mutex<[(String, JSONObject)]>([])
    func append(_ call: (String, JSONObject)) { recorded.withLock { $0.append(call) } }
    func withLock<R>(_ body: ([(String, JSONObject)]) -> R) -> R { recorded.withLock { body($0) } }
}

/// A QMP server with a handler table standing in for the proxy, on a socket in a fresh directory.
final class ControlFixture {
    let directory: TemporaryDirectory
    let server: QMPServer
    let calls = CallLog()
    var path: String { server.path }

    init() throws {
        directory = try TemporaryDirectory()
        var table = QMPCommandTable()
        let calls = self.calls
        table.register(ColoQMPSchema.queryStatus) { arguments in
            calls.append(("query-status", arguments))
            return .success(["status": "running", "role": "primary", "filters": [["id": "rew0", "status": "on"]]])
        }
        table.register(ColoQMPSchema.filterSetStatus) { arguments in
            calls.append(("filter-set-status", arguments))
            if arguments["id"]?.stringValue != "rew0" {
                return .failure(QMPError(.deviceNotFound, "No filter with id '\(arguments["id"]?.stringValue ?? "")'"))
            }
            return .success([:])
        }
        table.register(
            QMPCommand(
                "x-typed",
                arguments: [
                    QMPArgument("count", .integer), QMPArgument("ratio", .number), QMPArgument("on", .boolean),
                    QMPArgument("name", .string),
                ])
        ) { arguments in
            calls.append(("x-typed", arguments))
            return .success(.object(arguments))
        }
        var configuration = QMPServer.Configuration()
        configuration.log = { _ in }
        server = try QMPServer(path: directory.path + "/control.sock", handler: table, configuration: configuration)
    }

    deinit { server.stop() }

    /// Runs `colo-proxy ctl --control PATH` with `arguments`.
    func ctl(_ arguments: [String]) throws -> (status: Int32, output: [String], errors: [String]) {
        try runCtl(["--control", path] + arguments)
    }
}

func runCtl(_ arguments: [String]) throws -> (status: Int32, output: [String], errors: [String]) {
    let command = try CtlCommand.parse(arguments)
    var output: [String] = []
    var errors: [String] = []
    let status = command.execute(output: { output.append($0) }, errors: { errors.append($0) })
    return (status, output, errors)
}

@Suite("colo-proxy ctl against a real QMP server")
struct CtlCommandTests {
    @Test func queryPrintsTheReturnPrettyOrRaw() throws {
        let fixture = try ControlFixture()
        let pretty = try fixture.ctl(["query-status"])
        #expect(pretty.status == 0, "\(pretty.errors)")
        #expect(pretty.errors.isEmpty)
        let text = pretty.output.joined(separator: "\n")
        #expect(text.contains("\n  \"status\": \"running\""), "\(text)")
        #expect(try JSONValue.parse(text)["role"] == "primary")

        let raw = try fixture.ctl(["--json", "query-status"])
        #expect(raw.output.count == 1)
        #expect(try JSONValue.parse(raw.output[0])["filters"]?.arrayValue?.count == 1)
    }

    @Test func keyValueArgumentsAreTyped() throws {
        let fixture = try ControlFixture()
        let result = try fixture.ctl(["--json", "x-typed", "count=3", "ratio=0.5", "on=true", "name=\"42\""])
        #expect(result.status == 0, "\(result.errors)")
        let echoed = try JSONValue.parse(result.output.joined())
        #expect(echoed["count"] == .integer(3))
        #expect(echoed["ratio"] == .double(0.5))
        #expect(echoed["on"] == .bool(true))
        #expect(echoed["name"] == .string("42"))

        let set = try fixture.ctl(["filter-set-status", "id=rew0", "status=off"])
        #expect(set.status == 0, "\(set.errors)")
        let json = try fixture.ctl(["filter-set-status", #"{"id": "rew0", "status": "on"}"#])
        #expect(json.status == 0, "\(json.errors)")
        let calls = fixture.calls.withLock { $0 }.filter { $0.0 == "filter-set-status" }.map(\.1)
        #expect(calls == [["id": "rew0", "status": "off"], ["id": "rew0", "status": "on"]])
    }

    @Test func qmpErrorsGoToStandardErrorWithStatus1() throws {
        let fixture = try ControlFixture()
        let missing = try fixture.ctl(["filter-set-status", "id=nope", "status=off"])
        #expect(missing.status == 1)
        #expect(missing.output.isEmpty)
        #expect(missing.errors == ["colo-proxy ctl: filter-set-status: No filter with id 'nope' (DeviceNotFound)"])
        let unknown = try fixture.ctl(["no-such-command"])
        #expect(unknown.status == 1)
        #expect(unknown.errors.count == 1 && unknown.errors[0].contains("CommandNotFound"), "\(unknown.errors)")
        let wrongType = try fixture.ctl(["x-typed", "count=three"])
        #expect(wrongType.status == 1)
        #expect(wrongType.errors.count == 1 && wrongType.errors[0].contains("count"), "\(wrongType.errors)")
    }

    @Test func badArgumentsAndNoServerGetOneLineAndStatus2() throws {
        let directory = try TemporaryDirectory()
        let absent = try runCtl(["--control", directory.path + "/none.sock", "query-status"])
        #expect(absent.status == 2)
        #expect(absent.errors.count == 1)
        #expect(
            absent.errors.first?.hasPrefix("colo-proxy ctl: cannot connect to \(directory.path)/none.sock:") == true)

        let fixture = try ControlFixture()
        for bad in [
            ["query-status", "novalue"], ["query-status", "=x"], ["query-status", "a=1", "a=2"], ["q", "{bad"],
        ] {
            let result = try fixture.ctl(bad)
            #expect(result.status == 2, "\(bad)")
            #expect(result.errors.count == 1, "\(bad): \(result.errors)")
        }
        #expect(throws: (any Error).self) { try CtlCommand.parse([]).validate() }
        #expect(throws: (any Error).self) { try CtlCommand.parse(["--events", "query-status"]).validate() }
    }

    @Test func eventsAreWaitedForAndPrinted() throws {
        let fixture = try ControlFixture()
        let done = Atomic<Bool>(false)
        let server = fixture.server
        // The client may connect at any time: keep broadcasting until it has what it waits for.
        let broadcaster = Thread {
            var sequence: Int64 = 0
            while !done.load(ordering: .acquiring) {
                sequence += 1
                server.broadcast(
                    event: ColoQMPSchema.divergenceEvent, data: ["reason": "payload", "n": .integer(sequence)])
                usleep(20_000)
            }
        }
        broadcaster.start()
        let result = try fixture.ctl(["--events", "--json", "--count", "2", "--timeout", "5"])
        done.store(true, ordering: .releasing)
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output.count == 2)
        for line in result.output {
            let event = try JSONValue.parse(line)
            #expect(event["event"] == "DIVERGENCE")
            #expect(event["data"]?["reason"] == "payload")
        }

        let started = Date()
        let none = try fixture.ctl(["--events", "--count", "1", "--timeout", "0.3"])
        #expect(none.status == 1)
        #expect(none.errors == ["colo-proxy ctl: 0 of 1 events within 0.3 s"])
        #expect(Date().timeIntervalSince(started) < 2)
    }
}
