#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `read(2)`/`write(2)` on a TUN/TAP descriptor, wrapped once: `EINTR` is retried, `EAGAIN` is nil (the descriptor
/// is non-blocking and "nothing now" is the common case, not an error), every other failure throws its errno.
enum TapSystemCall {
    /// The errno of a failed call.
    struct Errno: Error {
        var code: Int32
    }

    /// Runs `call` (a read/write-style system call) until it is not interrupted: its count, nil for EAGAIN.
    @inline(__always)
    static func retrying(_ call: () -> Int) throws(Errno) -> Int? {
        while true {
            let result = call()
            if result >= 0 { return result }
            let code = errno
            if code == EINTR { continue }
            if code == EAGAIN || code == EWOULDBLOCK { return nil }
            throw Errno(code: code)
        }
    }

    /// Reads one frame (a TUN/TAP read never returns part of one, nor more than one).
    @inline(__always)
    static func readOnce(_ descriptor: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int? {
        try retrying { read(descriptor, buffer.baseAddress, buffer.count) }
    }

    /// Writes one frame (TUN/TAP writes are whole or fail).
    @inline(__always)
    static func writeOnce(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) throws(Errno) -> Int? {
        try retrying { write(descriptor, bytes.baseAddress, bytes.count) }
    }

    /// Reads one frame scattered over `vectors` (header, buffer, spill); the count read, nil for EAGAIN.
    @inline(__always)
    static func readVector(_ descriptor: Int32, _ vectors: UnsafePointer<iovec>, count: Int32) throws(Errno) -> Int? {
        try retrying { readv(descriptor, vectors, count) }
    }

    /// Writes one frame gathered from `vectors` (header, frame).
    @inline(__always)
    static func writeVector(_ descriptor: Int32, _ vectors: UnsafePointer<iovec>, count: Int32) throws(Errno) -> Int? {
        try retrying { writev(descriptor, vectors, count) }
    }
}
