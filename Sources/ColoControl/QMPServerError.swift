#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Why the control socket could not be set up.
public enum QMPServerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The path does not fit in `sockaddr_un.sun_path`.
    case pathTooLong(path: String, limit: Int)
    /// Something other than a socket is at the path; it is left alone.
    case notASocket(path: String)
    /// A live server already accepts connections on the socket at the path.
    case alreadyServed(path: String)
    /// A system call failed.
    case systemCall(name: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .pathTooLong(let path, let limit):
            return "control socket path '\(path)' is longer than \(limit) bytes"
        case .notASocket(let path):
            return "control socket path '\(path)' exists and is not a socket (refusing to replace it)"
        case .alreadyServed(let path):
            return "control socket '\(path)' is in use by a running server"
        case .systemCall(let name, let path, let code):
            return "\(name)('\(path)') failed: \(String(cString: strerror(code))) (errno \(code))"
        }
    }
}
