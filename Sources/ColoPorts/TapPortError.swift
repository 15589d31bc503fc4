#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A port operation that failed with an errno: names the operation, the device and the errno text, plus what to do
/// about it when the cause is a common one (a missing module, missing privileges, a name already taken).
///
/// Thrown by every port's system calls, so a user sees e.g.
/// `TUNSETIFF colo-p: Operation not permitted (needs CAP_NET_ADMIN: run as root)` rather than a bare errno.
public struct PortError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The system call or ioctl that failed (`open`, `TUNSETIFF`, `read`, …).
    public var operation: String
    /// The device, interface or path it was applied to.
    public var device: String
    /// The `errno` the kernel returned.
    public var code: Int32
    /// What to check or do, when the errno has a usual cause for this operation.
    public var hint: String?

    public init(operation: String, device: String, code: Int32, hint: String? = nil) {
        self.operation = operation
        self.device = device
        self.code = code
        self.hint = hint
    }

    /// The errno's text, as `strerror(3)` gives it.
    public var errnoText: String { String(cString: strerror(code)) }

    public var description: String {
        "\(operation) \(device): \(errnoText)" + (hint.map { " (\($0))" } ?? "")
    }
}
