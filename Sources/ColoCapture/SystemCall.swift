#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The errno of a failed system call; callers turn it into a `CaptureError` that names the file.
struct SystemCallError: Error {
    let errno: Int32
}

/// The few POSIX calls capture files need, wrapped once so every caller gets the EINTR retry and errno capture.
enum SystemCall {
    static func openFile(_ path: String, flags: Int32, mode: mode_t = 0) throws(SystemCallError) -> Int32 {
        while true {
            let descriptor = path.withCString { open($0, flags | O_CLOEXEC, mode) }
            if descriptor >= 0 { return descriptor }
            let code = errno
            if code != EINTR { throw SystemCallError(errno: code) }
        }
    }

    /// Returns 0 only at end of file.
    static func readSome(
        _ descriptor: Int32, into buffer: UnsafeMutableRawPointer, count: Int
    ) throws(SystemCallError) -> Int {
        while true {
            let result = read(descriptor, buffer, count)
            if result >= 0 { return result }
            let code = errno
            if code != EINTR { throw SystemCallError(errno: code) }
        }
    }

    /// Loops over short writes, which pipes and full disks produce, so callers never lose a tail.
    static func writeAll(_ descriptor: Int32, from buffer: UnsafeRawPointer, count: Int) throws(SystemCallError) {
        var written = 0
        while written < count {
            let result = write(descriptor, buffer + written, count - written)
            if result > 0 {
                written += result
                continue
            }
            let code = result == 0 ? EIO : errno
            if code != EINTR { throw SystemCallError(errno: code) }
        }
    }

    /// EINTR is not retried: on Linux the descriptor is already released, and retrying could close another's.
    static func closeFile(_ descriptor: Int32) throws(SystemCallError) {
        if close(descriptor) != 0 {
            let code = errno
            if code != EINTR { throw SystemCallError(errno: code) }
        }
    }

    static func describe(errno code: Int32) -> String {
        guard let message = strerror(code) else { return "errno \(code)" }
        return "\(String(cString: message)) (errno \(code))"
    }
}
