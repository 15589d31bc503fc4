#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The errno of a failed system call, as thrown by ``SystemCall``.
struct SystemCallError: Error {
    /// The `errno` value the call left behind.
    var code: Int32
}

/// The few system calls this module makes on the netlink socket, each wrapped once: `EINTR` is retried here, every
/// other failure is thrown as its errno.
enum SystemCall {
    /// `recv(2)`, retried on `EINTR`. Returns the datagram's full length when `flags` contains `MSG_TRUNC` (netlink
    /// reports the untruncated size), so a caller can tell a truncated message from a whole one.
    static func receive(
        _ descriptor: Int32,
        into buffer: UnsafeMutableRawBufferPointer,
        flags: Int32
    ) throws(SystemCallError) -> Int {
        while true {
            let result = recv(descriptor, buffer.baseAddress, buffer.count, flags)
            if result >= 0 { return result }
            let code = errno
            if code != EINTR { throw SystemCallError(code: code) }
        }
    }

    /// `setsockopt(2)` for an `Int32`-valued option.
    static func setSocketOption(
        _ descriptor: Int32,
        level: Int32,
        name: Int32,
        value: Int32
    ) throws(SystemCallError) {
        var value = value
        let result = setsockopt(descriptor, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
        if result != 0 { throw SystemCallError(code: errno) }
    }

    /// `getsockopt(2)` for an `Int32`-valued option.
    static func socketOption(_ descriptor: Int32, level: Int32, name: Int32) throws(SystemCallError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        let result = getsockopt(descriptor, level, name, &value, &length)
        if result != 0 { throw SystemCallError(code: errno) }
        return value
    }

    /// Adds `O_NONBLOCK` to the descriptor's status flags (`fcntl(2)` `F_GETFL`/`F_SETFL`, retried on `EINTR`).
    static func setNonBlocking(_ descriptor: Int32) throws(SystemCallError) {
        var flags: Int32
        repeat { flags = fcntl(descriptor, F_GETFL) } while flags < 0 && errno == EINTR
        if flags < 0 { throw SystemCallError(code: errno) }
        if flags & O_NONBLOCK != 0 { return }
        var result: Int32
        repeat { result = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) } while result < 0 && errno == EINTR
        if result < 0 { throw SystemCallError(code: errno) }
    }

    /// Reads a whole (small) file such as one under `/proc`, retrying `EINTR`. Allocates: not for hot paths.
    static func readFile(_ path: String, limit: Int = 1 << 20) throws(SystemCallError) -> [UInt8] {
        var descriptor: Int32
        repeat { descriptor = open(path, O_RDONLY | O_CLOEXEC) } while descriptor < 0 && errno == EINTR
        if descriptor < 0 { throw SystemCallError(code: errno) }
        defer { _ = close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < limit {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemCallError(code: errno)
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return bytes
    }
}

/// The C library's text for an errno value, e.g. "Operation not permitted".
func errnoDescription(_ code: Int32) -> String {
    if code == 0 { return "no errno reported" }
    guard let text = strerror(code) else { return "errno \(code)" }
    return "\(String(cString: text)) (errno \(code))"
}
