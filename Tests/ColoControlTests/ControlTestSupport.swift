import ColoControl
import ColoTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A handler standing in for the proxy: answers the SPEC §7 commands with fixed values and records every call.
final class FakeHandler: QMPCommandHandler {
    struct Call: Equatable {
        var name: String
        var arguments: JSONObject
    }

    private let recorded = Mutex<[Call]>([])
    let commands = ColoQMPSchema.commands

    var calls: [Call] { recorded.withLock { $0 } }

    func execute(name: String, arguments: JSONObject) -> Result<JSONValue, QMPError> {
        recorded.withLock { $0.append(Call(name: name, arguments: arguments)) }
        switch name {
        case "query-status":
            return .success(["status": "running", "role": "primary"])
        case "query-connections":
            return .success([["proto": "tcp", "offset": 42]])
        case "query-stats":
            return .success(["compared": 10, "divergences": 1])
        case "filter-set-status":
            guard let status = arguments["status"], let statusText = status.stringValue,
                ColoQMPSchema.filterStatusValues.contains(statusText)
            else {
                return .failure(
                    .invalidArgumentValue(
                        "status", value: arguments["status"] ?? .null, accepted: ColoQMPSchema.filterStatusValues))
            }
            if arguments["id"]?.stringValue == "missing0" {
                return .failure(QMPError(.deviceNotFound, "No filter with id 'missing0'"))
            }
            return .success([:])
        default:
            return .success([:])
        }
    }
}

/// Parses one answer line (with its CRLF) into JSON, recording an issue when it is not valid JSON.
func parseLine(_ line: String, sourceLocation: SourceLocation = #_sourceLocation) -> JSONValue {
    #expect(line.hasSuffix("\r\n"), "QMP lines end in CRLF: \(line.debugDescription)", sourceLocation: sourceLocation)
    do {
        return try JSONValue.parse(line)
    } catch {
        Issue.record("not JSON (\(error)): \(line.debugDescription)", sourceLocation: sourceLocation)
        return .null
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A QMP client over a real Unix socket, reading with timeouts so a broken server fails the test instead of
/// hanging it.
final class QMPTestClient {
    let descriptor: Int32
    private var buffer: [UInt8] = []

    init(path: String) throws {
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { sunPath in
            for (index, byte) in bytes.enumerated() where index < sunPath.count - 1 { sunPath[index] = byte }
        }
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            let message = String(cString: strerror(errno))
            close(descriptor)
            throw TestFailure("connect \(path): \(message)")
        }
    }

    deinit { close(descriptor) }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { throw TestFailure("send: \(String(cString: strerror(errno)))") }
            offset += written
        }
    }

    /// Waits up to `timeout` seconds for readable data; false on timeout.
    private func waitReadable(deadline: ContinuousClock.Instant) -> Bool {
        let remaining = deadline - ContinuousClock.now
        let milliseconds = max(
            0, Int32(remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000))
        var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
        return poll(&descriptors, 1, milliseconds) > 0
    }

    /// The next line, with its CRLF.
    func readLine(timeout: Double = 10) throws -> String {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[...newline], as: UTF8.self)
                buffer.removeFirst(newline + 1)
                return line
            }
            guard waitReadable(deadline: deadline) else { throw TestFailure("no line within \(timeout) s") }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { throw TestFailure("connection closed while waiting for a line") }
            buffer.append(contentsOf: chunk[0..<count])
        }
    }

    func readJSON(timeout: Double = 10) throws -> JSONValue {
        try JSONValue.parse(try readLine(timeout: timeout))
    }

    /// Reads the greeting and negotiates capabilities.
    func negotiate() throws {
        let greeting = try readJSON()
        guard greeting["QMP"] != nil else { throw TestFailure("not a greeting: \(greeting)") }
        try send("{\"execute\": \"qmp_capabilities\"}\r\n")
        let answer = try readJSON()
        guard answer["return"] == .object([:]) else { throw TestFailure("negotiation refused: \(answer)") }
    }

    /// Sends a command and returns its answer, skipping events that arrive first.
    func execute(_ name: String, arguments: JSONValue? = nil) throws -> JSONValue {
        var request: JSONObject = ["execute": .string(name)]
        if let arguments { request["arguments"] = arguments }
        try send(JSONValue.object(request).description + "\n")
        while true {
            let answer = try readJSON()
            if answer["event"] == nil { return answer }
        }
    }

    /// Reads and discards everything until the server closes the connection; false if it stays open past `timeout`.
    func readUntilClosed(timeout: Double = 10) -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var chunk = [UInt8](repeating: 0, count: 65536)
        while waitReadable(deadline: deadline) {
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return true }
        }
        return false
    }
}

/// Polls `condition` every 10 ms for up to `timeout` seconds.
func waitUntil(timeout: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}
