import ColoControl
import ColoTestSupport
import Foundation
import Testing

/// The control socket driven by QEMU's own Python QMP library (PyPI `qemu.qmp`), the client SPEC §7 names.
@Suite("QMP interop with qemu.qmp")
struct QMPInteropTests {
    /// The python3 first on PATH (where `pip install` put qemu.qmp), else the system one.
    static func python() -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        for directory in path.split(separator: ":") where access("\(directory)/python3", X_OK) == 0 {
            return "\(directory)/python3"
        }
        return Command.locate("python3")
    }

    @Test("qemu.qmp.QMPClient negotiates, runs commands, gets ExecuteError and an event")
    func qemuQMPClient() throws {
        let python = QMPInteropTests.python()
        let probe = try Command.run([python, "-c", "import qemu.qmp"], timeout: 20)
        guard probe.succeeded else {
            let message =
                "\(python) cannot import qemu.qmp: run Tools/install-deps.sh (it installs the PyPI package qemu.qmp)."
                + " \(probe)"
            Issue.record(Comment(rawValue: message))
            return
        }

        let directory = try TemporaryDirectory()
        let socketPath = "\(directory.path)/control.sock"
        let handler = FakeHandler()
        let server = try QMPServer(path: socketPath, handler: handler)
        defer { server.stop() }

        // Broadcast once the client has negotiated (the script is blocked in Command.run meanwhile).
        let broadcaster = Thread {
            if waitUntil(timeout: 15, { server.negotiatedClientCount >= 1 }) {
                server.broadcast(event: ColoQMPSchema.divergenceEvent, data: ["reason": "payload", "stream_offset": 7])
            }
        }
        broadcaster.start()

        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("qmp_client.py")
        let result = try Command.run([python, script.path, socketPath], timeout: 20)
        #expect(result.succeeded, "qmp_client.py exits 0: \(result)")
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines.contains(#"greeting: "colo-proxy""#), "greeting parsed by qemu.qmp: \(result.output)")
        #expect(lines.contains(#"status: {"role": "primary", "status": "running"}"#), "query-status: \(result.output)")
        let expectedCommands = (QMPSession.builtinCommands + ColoQMPSchema.commands).map(\.name).sorted()
        #expect(
            lines.contains("commands: " + expectedCommands.joined(separator: ",")), "query-commands: \(result.output)")
        #expect(
            lines.contains("unknown: CommandNotFound The command no-such-command has not been found"),
            "unknown command raised ExecuteError: \(result.output)")
        #expect(lines.contains("filter-set-status: {}"), "filter-set-status: \(result.output)")
        #expect(
            lines.contains(#"event: DIVERGENCE {"reason": "payload", "stream_offset": 7} True"#),
            "event received: \(result.output)")
        #expect(handler.calls.last?.arguments == ["id": "mirror0", "status": "off"], "arguments reached the handler")
    }
}
