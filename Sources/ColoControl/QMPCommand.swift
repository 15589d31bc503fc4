/// The JSON type a command argument must have. The session checks it before the handler runs.
public enum QMPArgumentType: Sendable, Equatable {
    case string
    /// An integer literal (a number with a fraction or exponent is refused).
    case integer
    /// Any number, integer or not.
    case number
    case boolean
    case object
    case array
    /// Any JSON value: the handler checks it.
    case any

    /// The type's name in error messages ("string", "int", ...).
    public var name: String {
        switch self {
        case .string: return "string"
        case .integer: return "int"
        case .number: return "number"
        case .boolean: return "bool"
        case .object: return "object"
        case .array: return "array"
        case .any: return "any"
        }
    }

    /// Whether `value` has this type.
    public func accepts(_ value: JSONValue) -> Bool {
        switch (self, value) {
        case (.any, _), (.string, .string), (.integer, .integer), (.number, .integer), (.number, .double),
            (.boolean, .bool), (.object, .object), (.array, .array):
            return true
        default:
            return false
        }
    }
}

/// One argument of a command: its name, JSON type and whether it may be left out.
public struct QMPArgument: Sendable, Equatable {
    public var name: String
    public var type: QMPArgumentType
    public var isOptional: Bool

    public init(_ name: String, _ type: QMPArgumentType, optional: Bool = false) {
        self.name = name
        self.type = type
        self.isOptional = optional
    }
}

/// A command's name and argument schema. The session refuses unknown, missing and mistyped arguments with a
/// `GenericError` naming the argument, so a handler only sees arguments that match the schema.
public struct QMPCommand: Sendable, Equatable {
    public var name: String
    public var arguments: [QMPArgument]

    public init(_ name: String, arguments: [QMPArgument] = []) {
        self.name = name
        self.arguments = arguments
    }

    /// The error for `arguments` against this schema, or nil when they match it.
    public func validate(_ arguments: JSONObject) -> QMPError? {
        for (key, _) in arguments where !self.arguments.contains(where: { $0.name == key }) {
            return .unexpectedArgument(key)
        }
        for argument in self.arguments {
            guard let value = arguments[argument.name] else {
                if argument.isOptional { continue }
                return .missingArgument(argument.name)
            }
            if !argument.type.accepts(value) {
                return .invalidArgumentType(argument.name, expected: argument.type.name)
            }
        }
        return nil
    }
}

/// What the control socket runs commands against: the proxy implements it.
///
/// `execute` is called on the server's I/O thread (see ``QMPServer``), one command at a time, only after the session
/// negotiated capabilities, only for a name listed in `commands`, and only with arguments that passed the
/// command's schema. It must return promptly (take a snapshot, flip a flag, hand work to another thread): while it
/// runs no client is served. It may call ``QMPServer/broadcast(event:data:)``.
public protocol QMPCommandHandler: Sendable {
    /// The commands this handler runs, in the order `query-commands` lists them. Fixed for the handler's lifetime
    /// (read once per session).
    var commands: [QMPCommand] { get }

    /// Runs one command. The value becomes the `return` member (use an empty object for "nothing to return").
    func execute(name: String, arguments: JSONObject) -> Result<JSONValue, QMPError>
}

/// A ``QMPCommandHandler`` built from closures, one per command.
///
///     var table = QMPCommandTable()
///     table.register(ColoQMPSchema.queryStatus) { _ in .success(["status": "running"]) }
public struct QMPCommandTable: QMPCommandHandler {
    public typealias Body = @Sendable (JSONObject) -> Result<JSONValue, QMPError>

    public private(set) var commands: [QMPCommand] = []
    private var bodies: [String: Body] = [:]

    public init() {}

    /// Adds `command`, run by `body`; registering a name again replaces the earlier command.
    public mutating func register(_ command: QMPCommand, _ body: @escaping Body) {
        if let index = commands.firstIndex(where: { $0.name == command.name }) {
            commands[index] = command
        } else {
            commands.append(command)
        }
        bodies[command.name] = body
    }

    public func execute(name: String, arguments: JSONObject) -> Result<JSONValue, QMPError> {
        guard let body = bodies[name] else { return .failure(.commandNotFound(name)) }
        return body(arguments)
    }
}
