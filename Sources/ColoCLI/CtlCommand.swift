import ArgumentParser
import ColoControl
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `colo-proxy ctl`: the built-in QMP client for the control socket (SPEC §7).
public struct CtlCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ctl",
        abstract: "Send one QMP command to a running proxy, or wait for its events.",
        discussion: """
            ARGS are key=value pairs (numbers, true/false and null are typed; quote a value as JSON, e.g. \
            id='"42"', to keep it text) or one JSON object. Examples: `ctl query-status`, \
            `ctl filter-set-status id=rew0 status=off`, `ctl --events --count 1 --timeout 30`. \
            Exit 0: success; 1: the proxy answered with an error (or too few events); 2: no connection or a bad \
            answer.
            """
    )

    @Option(name: .long, help: "QMP control socket path.")
    public var control: String = "/run/colo-proxy/control.sock"

    @Flag(name: .long, help: "Print the answer (or events) as compact JSON, one line each.")
    public var json = false

    @Flag(name: .long, help: "Wait for asynchronous events (DIVERGENCE, FAILOVER) instead of sending a command.")
    public var events = false

    @Option(name: .long, help: "With --events: stop after this many events.")
    public var count: Int?

    @Option(
        name: .long,
        help: "Seconds to wait for an answer, or with --events for the events (default 10; 0 = no limit with --events)."
    )
    public var timeout: Double = 10

    @Argument(
        help: ArgumentHelp(
            "The QMP command, then its arguments (key=value... or a JSON object).", valueName: "command-and-args"))
    public var words: [String] = []

    public init() {}

    public func validate() throws {
        if events {
            guard words.isEmpty else { throw ValidationError("--events takes no command (got '\(words[0])')") }
            if let count, count < 1 { throw ValidationError("--count: bad value \(count) (accepted: a number ≥ 1)") }
        } else {
            guard !words.isEmpty else { throw ValidationError("missing COMMAND (e.g. query-status)") }
            guard count == nil else { throw ValidationError("--count goes with --events") }
        }
        guard timeout >= 0, timeout.isFinite else {
            throw ValidationError("--timeout: bad value \(timeout) (accepted: seconds ≥ 0)")
        }
    }

    public func run() throws {
        let status = execute(output: { print($0) }, errors: { StandardError.line($0) })
        if status != 0 { throw ExitCode(status) }
    }

    /// Runs the command, writing answers to `output` and problems to `errors`; returns the exit status.
    public func execute(output: (String) -> Void, errors: (String) -> Void) -> Int32 {
        let arguments: JSONObject
        do {
            arguments = try Self.arguments(Array(words.dropFirst()))
        } catch {
            errors("colo-proxy ctl: \(error)")
            return 2
        }
        let client: QMPClient
        do {
            client = try QMPClient(path: control)
        } catch {
            errors("colo-proxy ctl: cannot connect to \(control): \(error)")
            return 2
        }
        defer { client.close() }
        let limit = timeout == 0 && events ? nil : timeout
        do {
            _ = try client.handshake(timeout: timeout == 0 ? 10 : timeout)
            if events {
                var seen = 0
                while count.map({ seen < $0 }) ?? true {
                    guard let event = try client.nextEvent(timeout: limit) else { break }
                    output(json ? event.description : Self.pretty(event))
                    seen += 1
                }
                if let count, seen < count {
                    errors("colo-proxy ctl: \(seen) of \(count) events within \(timeout) s")
                    return 1
                }
                return 0
            }
            switch try client.execute(words[0], arguments: arguments, timeout: timeout == 0 ? 10 : timeout) {
            case .success(let value):
                output(json ? value.description : Self.pretty(value))
                return 0
            case .failure(let error):
                errors("colo-proxy ctl: \(words[0]): \(error.description) (\(error.errorClass.rawValue))")
                return 1
            }
        } catch {
            errors("colo-proxy ctl: \(control): \(error)")
            return 2
        }
    }

    /// `key=value...` or one JSON object as the command's arguments.
    static func arguments(_ words: [String]) throws(QMPClientError) -> JSONObject {
        if words.count == 1, words[0].hasPrefix("{") {
            do {
                guard let object = try JSONValue.parse(words[0]).objectValue else {
                    throw QMPClientError.badArguments("'\(words[0])' is not a JSON object")
                }
                return object
            } catch let error as QMPClientError {
                throw error
            } catch {
                throw .badArguments("'\(words[0])' is not a JSON object: \(error)")
            }
        }
        var members: [(String, JSONValue)] = []
        for word in words {
            guard let equals = word.firstIndex(of: "="), equals != word.startIndex else {
                throw .badArguments("argument '\(word)' is not key=value (or give one JSON object)")
            }
            let key = String(word[..<equals])
            guard !members.contains(where: { $0.0 == key }) else {
                throw .badArguments("argument '\(key)' given twice")
            }
            members.append((key, typed(String(word[word.index(after: equals)...]))))
        }
        return JSONObject(members)
    }

    /// A value typed as QMP expects it: integers, numbers, booleans and null from their JSON spelling, JSON strings
    /// and objects as written, anything else as text.
    static func typed(_ text: String) -> JSONValue {
        if let integer = Int64(text) { return .integer(integer) }
        if text == "true" || text == "false" || text == "null" || text.hasPrefix("\"") || text.hasPrefix("{")
            || text.hasPrefix("[") || (Double(text) != nil && text.first.map({ $0.isNumber || $0 == "-" }) == true)
        {
            if let value = try? JSONValue.parse(text) { return value }
        }
        return .string(text)
    }

    /// Indented JSON, two spaces per level.
    static func pretty(_ value: JSONValue, indent: String = "") -> String {
        let inner = indent + "  "
        switch value {
        case .object(let object) where !object.isEmpty:
            let members = object.map {
                inner + JSONValue.string($0.key).description + ": " + pretty($0.value, indent: inner)
            }
            return "{\n" + members.joined(separator: ",\n") + "\n" + indent + "}"
        case .array(let elements) where !elements.isEmpty:
            let items = elements.map { inner + pretty($0, indent: inner) }
            return "[\n" + items.joined(separator: ",\n") + "\n" + indent + "]"
        default:
            return value.description
        }
    }
}

public enum QMPClientError: Error, CustomStringConvertible, Equatable {
    case system(String, Int32)
    case timedOut(waitingFor: String)
    case closed(waitingFor: String)
    case badMessage(String)
    case lineTooLong(Int)
    case badArguments(String)

    public var description: String {
        switch self {
        case .system(let call, let code): return "\(call): \(String(cString: strerror(code)))"
        case .timedOut(let what): return "timed out waiting for \(what)"
        case .closed(let what): return "the proxy closed the connection while we waited for \(what)"
        case .badMessage(let text): return "not a QMP message: \(text)"
        case .lineTooLong(let limit): return "a message longer than \(limit) bytes"
        case .badArguments(let text): return text
        }
    }
}

/// A blocking QMP client over a Unix socket: greeting, capabilities, commands, events. The server writes one
/// message per line (CRLF), which is what this reads.
final class QMPClient {
    static let maximumLineBytes = 16 << 20

    private let descriptor: Int32
    private var buffer: [UInt8] = []
    private var pendingEvents: [JSONValue] = []

    init(path: String) throws(QMPClientError) {
        guard path.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else {
            throw .system("connect", ENAMETOOLONG)
        }
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw .system("socket", errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { sunPath in
            for (index, byte) in bytes.enumerated() { sunPath[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let code = errno
            Glibc.close(descriptor)
            throw .system("connect", code)
        }
    }

    func close() { Glibc.close(descriptor) }

    /// Reads the greeting and negotiates capabilities; returns the greeting.
    func handshake(timeout: Double) throws(QMPClientError) -> JSONValue {
        let greeting = try readMessage(timeout: timeout, waitingFor: "the QMP greeting")
        guard greeting["QMP"] != nil else { throw .badMessage("expected the greeting, got \(greeting)") }
        if case .failure(let error) = try execute("qmp_capabilities", arguments: [:], timeout: timeout) {
            throw .badMessage("qmp_capabilities refused: \(error.description)")
        }
        return greeting
    }

    /// Sends a command and waits for its answer; events that arrive meanwhile are kept for ``nextEvent(timeout:)``.
    func execute(_ name: String, arguments: JSONObject, timeout: Double) throws(QMPClientError)
        -> Result<JSONValue, QMPError>
    {
        var message: JSONObject = ["execute": .string(name)]
        if !arguments.isEmpty { message["arguments"] = .object(arguments) }
        try send(Array((message.description + "\r\n").utf8))
        while true {
            let answer = try readMessage(timeout: timeout, waitingFor: "the answer to \(name)")
            if answer["event"] != nil {
                pendingEvents.append(answer)
                continue
            }
            if let value = answer["return"] { return .success(value) }
            if let error = answer["error"] {
                let errorClass = error["class"]?.stringValue.flatMap(QMPErrorClass.init(rawValue:)) ?? .genericError
                return .failure(QMPError(errorClass, error["desc"]?.stringValue ?? error.description))
            }
            throw .badMessage(answer.description)
        }
    }

    /// The next event, or nil when `timeout` (seconds; nil = forever) passes first.
    func nextEvent(timeout: Double?) throws(QMPClientError) -> JSONValue? {
        if !pendingEvents.isEmpty { return pendingEvents.removeFirst() }
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        while true {
            let left = deadline.map { $0.timeIntervalSinceNow }
            if let left, left <= 0 { return nil }
            let message: JSONValue
            do {
                message = try readMessage(timeout: left, waitingFor: "events")
            } catch .timedOut {
                return nil
            }
            if message["event"] != nil { return message }
        }
    }

    private func send(_ bytes: [UInt8]) throws(QMPClientError) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                if errno == EINTR { continue }
                throw .system("send", errno)
            }
            offset += written
        }
    }

    private func readMessage(timeout: Double?, waitingFor what: String) throws(QMPClientError) -> JSONValue {
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = buffer[..<newline]
                buffer.removeSubrange(...newline)
                let trimmed = line.last == 0x0D ? line.dropLast() : line
                if trimmed.isEmpty { continue }
                do {
                    return try JSONValue.parse(trimmed)
                } catch {
                    throw .badMessage(String(decoding: trimmed.prefix(200), as: UTF8.self))
                }
            }
            guard buffer.count <= Self.maximumLineBytes else { throw .lineTooLong(Self.maximumLineBytes) }
            var milliseconds: Int32 = -1
            if let deadline {
                let left = deadline.timeIntervalSinceNow
                if left <= 0 { throw .timedOut(waitingFor: what) }
                milliseconds = Int32(min(left * 1000, Double(Int32.max)).rounded(.up))
            }
            var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&descriptors, 1, milliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw .system("poll", errno)
            }
            if ready == 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .system("recv", errno)
            }
            if count == 0 { throw .closed(waitingFor: what) }
            buffer += chunk[0..<count]
        }
    }
}
