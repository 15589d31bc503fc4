import ColoStages

#if canImport(Glibc)
    import Glibc
#endif

/// Why a socket port could not be opened (bad address, bind or listen failure): one line naming the port.
public struct SocketPortError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A resolved socket address for a `socket` port: a Unix path or the first address `getaddrinfo` gives for a
/// TCP host and port. Resolved once, when the port opens; reconnects reuse it.
public struct SocketAddress {
    var storage = sockaddr_storage()
    public private(set) var length: socklen_t = 0
    public private(set) var family: Int32 = AF_UNIX
    public private(set) var unixPath: String?

    public init(_ endpoint: SocketPortSpec.Endpoint, portID: String) throws(SocketPortError) {
        switch endpoint {
        case .unix(let path):
            var address = sockaddr_un()
            let capacity = MemoryLayout.size(ofValue: address.sun_path)
            let bytes = Array(path.utf8)
            guard !bytes.isEmpty, bytes.count < capacity else {
                throw SocketPortError(
                    "port \(portID): unix socket path is \(bytes.count) bytes; it must be 1 to \(capacity - 1)")
            }
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            withUnsafeMutableBytes(of: &storage) { raw in
                withUnsafeBytes(of: address) { raw.copyMemory(from: $0) }
            }
            length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
            family = AF_UNIX
            unixPath = path
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_NUMERICSERV
            var result: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &result)
            guard status == 0, let first = result, let address = first.pointee.ai_addr else {
                let reason = status == 0 ? "no address" : String(cString: gai_strerror(status))
                throw SocketPortError("port \(portID): cannot resolve host \(host): \(reason)")
            }
            defer { freeaddrinfo(result) }
            length = first.pointee.ai_addrlen
            family = first.pointee.ai_family
            withUnsafeMutableBytes(of: &storage) { raw in
                raw.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(length)))
            }
        }
    }

    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }

    /// The text for log lines: the path, or host:port.
    public static func describe(_ endpoint: SocketPortSpec.Endpoint) -> String {
        switch endpoint {
        case .unix(let path): return path
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}

/// `strerror` as a Swift string.
func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }
