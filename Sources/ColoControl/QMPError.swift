/// The `class` member of a QMP error response. Clients dispatch on it, so only QMP's own classes are used.
public enum QMPErrorClass: String, Sendable, Equatable {
    /// Any failure that has no more specific class (bad arguments, refused operations).
    case genericError = "GenericError"
    /// The command does not exist, or is not available in the session's state.
    case commandNotFound = "CommandNotFound"
    /// The device (for us: the filter or port) named by an argument is not active.
    case deviceNotActive = "DeviceNotActive"
    /// The device (for us: the filter or port) named by an argument does not exist.
    case deviceNotFound = "DeviceNotFound"
}

/// A failed QMP command: its class and the human-readable `desc`, sent as
/// `{"error": {"class": ..., "desc": ...}}`.
public struct QMPError: Error, Equatable, Sendable, CustomStringConvertible {
    public var errorClass: QMPErrorClass
    /// The `desc` member: one sentence for the operator, naming the argument or object at fault.
    public var description: String

    public init(_ errorClass: QMPErrorClass, _ description: String) {
        self.errorClass = errorClass
        self.description = description
    }

    /// A ``QMPErrorClass/genericError`` with this description.
    public static func generic(_ description: String) -> QMPError { QMPError(.genericError, description) }

    /// The command is not known to the server.
    public static func commandNotFound(_ name: String) -> QMPError {
        QMPError(.commandNotFound, "The command \(name) has not been found")
    }

    /// A command other than `qmp_capabilities` before capabilities negotiation.
    public static let negotiationExpected = QMPError(
        .commandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'")

    /// `qmp_capabilities` after capabilities negotiation.
    public static let negotiationComplete = QMPError(
        .commandNotFound, "Capabilities negotiation is already complete, command ignored")

    /// A required argument is absent.
    public static func missingArgument(_ name: String) -> QMPError {
        .generic("Parameter '\(name)' is missing")
    }

    /// An argument the command does not take.
    public static func unexpectedArgument(_ name: String) -> QMPError {
        .generic("Parameter '\(name)' is unexpected")
    }

    /// An argument of the wrong JSON type.
    public static func invalidArgumentType(_ name: String, expected: String) -> QMPError {
        .generic("Invalid parameter type for '\(name)', expected: \(expected)")
    }

    /// An argument of the right type whose value is refused (`accepted` lists what would be, when it is a short
    /// list).
    public static func invalidArgumentValue(_ name: String, value: JSONValue, accepted: [String] = []) -> QMPError {
        let shown = value.stringValue ?? value.description
        let hint = accepted.isEmpty ? "" : " (expected one of: \(accepted.joined(separator: ", ")))"
        return .generic("Parameter '\(name)' does not accept value '\(shown)'\(hint)")
    }

    /// A message that is not valid JSON.
    public static func parse(_ error: JSONParseError) -> QMPError {
        .generic("JSON parse error, \(error)")
    }

    /// A message longer than the server accepts.
    public static func messageTooLarge(limit: Int) -> QMPError {
        .generic("JSON parse error, message longer than \(limit) bytes (discarded)")
    }

    /// The error response body: `{"class": ..., "desc": ...}`.
    public var json: JSONValue {
        ["class": .string(errorClass.rawValue), "desc": .string(description)]
    }
}
