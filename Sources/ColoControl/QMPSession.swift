#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What the server says about itself in the greeting: `{"QMP": {"version": {...}, "capabilities": []}}`.
///
/// QMP clients only require `version` to be an object; `qemu` carries this program's version in QEMU's
/// `major`/`minor`/`micro` shape and `package` names the program, so tools that print it show "colo-proxy".
public struct QMPGreeting: Sendable, Equatable {
    public var major: Int64
    public var minor: Int64
    public var micro: Int64
    public var package: String

    public init(major: Int64 = 0, minor: Int64 = 1, micro: Int64 = 0, package: String = "colo-proxy") {
        self.major = major
        self.minor = minor
        self.micro = micro
        self.package = package
    }

    /// The `version` object, also returned by `query-version`.
    public var version: JSONValue {
        [
            "qemu": ["major": .integer(major), "minor": .integer(minor), "micro": .integer(micro)],
            "package": .string(package),
        ]
    }

    /// The greeting message. No capabilities are offered (in particular not `oob`).
    public var json: JSONValue {
        ["QMP": ["version": version, "capabilities": []]]
    }
}

/// Wall-clock time of an event, as QMP sends it: `{"seconds": S, "microseconds": U}`.
public struct QMPTimestamp: Sendable, Equatable {
    public var seconds: Int64
    public var microseconds: Int64

    public init(seconds: Int64, microseconds: Int64) {
        self.seconds = seconds
        self.microseconds = microseconds
    }

    /// The current `CLOCK_REALTIME`.
    public static func now() -> QMPTimestamp {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return QMPTimestamp(seconds: Int64(time.tv_sec), microseconds: Int64(time.tv_nsec) / 1000)
    }

    public var json: JSONValue { ["seconds": .integer(seconds), "microseconds": .integer(microseconds)] }
}

/// An asynchronous event: `{"event": NAME, "data": {...}, "timestamp": {...}}` (`data` left out when nil).
public struct QMPEvent: Sendable, Equatable {
    public var name: String
    public var data: JSONObject?
    public var timestamp: QMPTimestamp

    public init(name: String, data: JSONObject? = nil, timestamp: QMPTimestamp = .now()) {
        self.name = name
        self.data = data
        self.timestamp = timestamp
    }

    public var json: JSONValue {
        var object: JSONObject = ["event": .string(name)]
        if let data { object["data"] = .object(data) }
        object["timestamp"] = timestamp.json
        return .object(object)
    }

    /// The event as a wire line, ending in CRLF.
    public var line: String { QMPSession.line(json) }
}

/// One client's QMP conversation, independent of the transport: feed it the bytes the client sent, write back the
/// lines it returns.
///
/// Not thread-safe: one session belongs to one thread (the server's I/O thread). The handler's `execute` runs
/// synchronously inside ``receive(_:)``.
///
/// Protocol handled here: the greeting; `qmp_capabilities` (with optional `arguments.enable`, which must name no
/// capability since none is offered); `query-commands` and `query-version`; the `id` member echoed in the answer
/// to any message that is an object; `CommandNotFound` for unknown commands and for commands before negotiation;
/// `GenericError` for malformed messages, bad JSON (the session goes on with the next message) and arguments that
/// do not match the command's schema.
public final class QMPSession {
    /// Commands the session answers itself, whatever the handler offers.
    public static let builtinCommands = [capabilitiesCommand, queryCommandsCommand, queryVersionCommand]
    static let capabilitiesCommand = QMPCommand(
        "qmp_capabilities", arguments: [QMPArgument("enable", .array, optional: true)])
    static let queryCommandsCommand = QMPCommand("query-commands")
    static let queryVersionCommand = QMPCommand("query-version")

    /// Default cap on one message's size.
    public static let defaultMaximumMessageBytes = 64 * 1024

    private let handler: any QMPCommandHandler
    private let greeting: QMPGreeting
    private let handlerCommands: [String: QMPCommand]
    private let commandList: JSONValue
    private var splitter: QMPMessageSplitter

    /// Whether `qmp_capabilities` succeeded: commands are accepted and events delivered only from then on.
    public private(set) var isNegotiated = false

    /// - Parameters:
    ///   - maximumMessageBytes: the longest message accepted; a longer one is answered with a `GenericError` and
    ///     skipped without being stored.
    public init(
        handler: any QMPCommandHandler,
        greeting: QMPGreeting = QMPGreeting(),
        maximumMessageBytes: Int = QMPSession.defaultMaximumMessageBytes
    ) {
        self.handler = handler
        self.greeting = greeting
        self.splitter = QMPMessageSplitter(limit: max(maximumMessageBytes, 16))
        let builtinNames = Set(QMPSession.builtinCommands.map(\.name))
        var commands: [String: QMPCommand] = [:]
        var names = QMPSession.builtinCommands.map(\.name)
        for command in handler.commands where !builtinNames.contains(command.name) && commands[command.name] == nil {
            commands[command.name] = command
            names.append(command.name)
        }
        self.handlerCommands = commands
        self.commandList = .array(names.map { ["name": .string($0)] })
    }

    /// The greeting line the server sends first.
    public var greetingLine: String { QMPSession.line(greeting.json) }

    /// Bytes of an incomplete message held for the next read (bounded by the message size limit).
    public var pendingInputBytes: Int { splitter.bufferedByteCount }

    /// Consumes bytes from the client and returns the answers, one line (ending in CRLF) per complete message, in
    /// order. Bytes of an incomplete message are kept for the next call.
    public func receive(_ bytes: some Sequence<UInt8>) -> [String] {
        var answers: [String] = []
        splitter.feed(bytes) { piece in
            switch piece {
            case .message(let message):
                answers.append(QMPSession.line(answer(to: message)))
            case .oversized(let limit):
                answers.append(QMPSession.line(QMPSession.errorResponse(.messageTooLarge(limit: limit), id: nil)))
            }
        }
        return answers
    }

    /// The line for `event` if this session receives events (it has negotiated capabilities), else nil.
    public func eventLine(_ event: QMPEvent) -> String? {
        isNegotiated ? event.line : nil
    }

    /// `value` as a wire line: compact JSON and CRLF, as QEMU's monitor writes them.
    public static func line(_ value: JSONValue) -> String {
        value.description + "\r\n"
    }

    // MARK: Dispatch

    private func answer(to message: [UInt8]) -> JSONValue {
        let value: JSONValue
        do {
            value = try JSONParser.parse(message)
        } catch {
            return QMPSession.errorResponse(.parse(error), id: nil)
        }
        guard case .object(let request) = value else {
            return QMPSession.errorResponse(.generic("QMP input must be a JSON object"), id: nil)
        }
        let id = request["id"]
        switch execute(request) {
        case .success(let result):
            var response: JSONObject = ["return": result]
            if let id { response["id"] = id }
            return .object(response)
        case .failure(let error):
            return QMPSession.errorResponse(error, id: id)
        }
    }

    private func execute(_ request: JSONObject) -> Result<JSONValue, QMPError> {
        for (key, _) in request where key != "execute" && key != "arguments" && key != "id" {
            if key == "exec-oob" {
                return .failure(.generic("QMP input member 'exec-oob' requires the 'oob' capability, not offered"))
            }
            return .failure(.generic("QMP input member '\(key)' is unexpected"))
        }
        guard let nameValue = request["execute"] else {
            return .failure(.generic("QMP input lacks member 'execute'"))
        }
        guard case .string(let name) = nameValue else {
            return .failure(.generic("QMP input member 'execute' must be a string"))
        }
        var arguments = JSONObject()
        if let argumentsValue = request["arguments"] {
            guard case .object(let object) = argumentsValue else {
                return .failure(.generic("QMP input member 'arguments' must be an object"))
            }
            arguments = object
        }

        if name == "qmp_capabilities" { return negotiate(arguments) }
        guard isNegotiated else { return .failure(.negotiationExpected) }
        switch name {
        case "query-commands":
            if let error = QMPSession.queryCommandsCommand.validate(arguments) { return .failure(error) }
            return .success(commandList)
        case "query-version":
            if let error = QMPSession.queryVersionCommand.validate(arguments) { return .failure(error) }
            return .success(greeting.version)
        default:
            guard let command = handlerCommands[name] else { return .failure(.commandNotFound(name)) }
            if let error = command.validate(arguments) { return .failure(error) }
            return handler.execute(name: name, arguments: arguments)
        }
    }

    private func negotiate(_ arguments: JSONObject) -> Result<JSONValue, QMPError> {
        if isNegotiated { return .failure(.negotiationComplete) }
        if let error = QMPSession.capabilitiesCommand.validate(arguments) { return .failure(error) }
        for capability in arguments["enable"]?.arrayValue ?? [] {
            guard case .string(let name) = capability else {
                return .failure(.invalidArgumentType("enable", expected: "array of strings"))
            }
            return .failure(.generic("Capability '\(name)' not available"))
        }
        isNegotiated = true
        return .success(.object([:]))
    }

    private static func errorResponse(_ error: QMPError, id: JSONValue?) -> JSONValue {
        var response: JSONObject = ["error": error.json]
        if let id { response["id"] = id }
        return .object(response)
    }
}
