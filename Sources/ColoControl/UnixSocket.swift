#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The system calls the control socket makes, each wrapped once: `EINTR` retried, failures returned as errno.
enum UnixSocket {
    /// The longest path `sockaddr_un` holds (its `sun_path` less the terminating NUL).
    static let maximumPathBytes = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    #if canImport(Glibc)
        static let streamType = Int32(SOCK_STREAM.rawValue)
        static let closeOnExec = Int32(SOCK_CLOEXEC.rawValue)
        static let nonBlocking = Int32(SOCK_NONBLOCK.rawValue)
    #else
        static let streamType = Int32(SOCK_STREAM)
        static let closeOnExec = Int32(SOCK_CLOEXEC)
        static let nonBlocking = Int32(SOCK_NONBLOCK)
    #endif

    /// A failed call's errno.
    struct Failure: Error {
        var name: String
        var code: Int32
    }

    /// A new non-blocking, close-on-exec stream socket.
    static func makeStreamSocket() throws(Failure) -> Int32 {
        let descriptor = socket(AF_UNIX, streamType | closeOnExec | nonBlocking, 0)
        if descriptor < 0 { throw Failure(name: "socket", code: errno) }
        return descriptor
    }

    /// Runs `body` with `path` as a `sockaddr_un` (the caller checked its length).
    static func withAddress<Result>(
        _ path: String,
        _ body: (UnsafePointer<sockaddr>, socklen_t) -> Result
    ) -> Result {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8.prefix(maximumPathBytes))
        withUnsafeMutableBytes(of: &address.sun_path) { sunPath in
            for (index, byte) in bytes.enumerated() { sunPath[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path) ?? 2) + socklen_t(bytes.count + 1)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }

    static func bindAddress(_ descriptor: Int32, path: String) throws(Failure) {
        let result = withAddress(path) { bind(descriptor, $0, $1) }
        if result != 0 { throw Failure(name: "bind", code: errno) }
    }

    static func startListening(_ descriptor: Int32, backlog: Int32) throws(Failure) {
        if listen(descriptor, backlog) != 0 { throw Failure(name: "listen", code: errno) }
    }

    /// Connects a blocking probe socket; used only to tell a live socket from a stale one.
    static func probe(path: String) throws(Failure) {
        let descriptor = socket(AF_UNIX, streamType | closeOnExec, 0)
        if descriptor < 0 { throw Failure(name: "socket", code: errno) }
        defer { _ = close(descriptor) }
        var result: Int32
        repeat {
            result = withAddress(path) { connect(descriptor, $0, $1) }
        } while result != 0 && errno == EINTR
        if result != 0 { throw Failure(name: "connect", code: errno) }
    }

    /// Accepts one pending connection as a non-blocking, close-on-exec socket; nil when none is pending.
    static func acceptPending(_ listening: Int32) throws(Failure) -> Int32? {
        while true {
            // accept4 is not exported to Swift by Glibc; the flags are set right after instead.
            let descriptor = accept(listening, nil, nil)
            if descriptor >= 0 {
                do {
                    try setFlags(descriptor)
                } catch {
                    _ = close(descriptor)
                    throw error
                }
                return descriptor
            }
            switch errno {
            case EINTR: continue
            // The peer gave up before we accepted: nothing pending from it.
            case EAGAIN, EWOULDBLOCK, ECONNABORTED: return nil
            default: throw Failure(name: "accept4", code: errno)
            }
        }
    }

    /// Reads what is available; 0 at end of stream, nil when nothing is available now.
    static func receiveAvailable(_ descriptor: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(Failure)
        -> Int?
    {
        while true {
            let count = recv(descriptor, buffer.baseAddress, buffer.count, 0)
            if count >= 0 { return count }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            default: throw Failure(name: "recv", code: errno)
            }
        }
    }

    /// Writes what the socket takes now (never raising SIGPIPE); returns the count written, 0 when it is full.
    static func sendAvailable(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) throws(Failure) -> Int {
        while true {
            let count = send(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if count >= 0 { return count }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return 0
            default: throw Failure(name: "send", code: errno)
            }
        }
    }

    /// `lstat(2)`; nil when nothing is at the path.
    static func linkStatus(_ path: String) throws(Failure) -> stat? {
        var status = stat()
        if lstat(path, &status) == 0 { return status }
        if errno == ENOENT { return nil }
        throw Failure(name: "lstat", code: errno)
    }

    static func isSocket(_ status: stat) -> Bool {
        status.st_mode & S_IFMT == S_IFSOCK
    }

    /// A non-blocking, close-on-exec pipe: (read end, write end).
    static func makePipe() throws(Failure) -> (Int32, Int32) {
        var descriptors: [Int32] = [-1, -1]
        if pipe(&descriptors) != 0 { throw Failure(name: "pipe", code: errno) }
        do {
            try setFlags(descriptors[0])
            try setFlags(descriptors[1])
        } catch {
            _ = close(descriptors[0])
            _ = close(descriptors[1])
            throw error
        }
        return (descriptors[0], descriptors[1])
    }

    /// Makes a descriptor non-blocking and close-on-exec.
    static func setFlags(_ descriptor: Int32) throws(Failure) {
        var flags: Int32
        repeat { flags = fcntl(descriptor, F_GETFL) } while flags < 0 && errno == EINTR
        if flags < 0 { throw Failure(name: "fcntl", code: errno) }
        var result: Int32
        repeat { result = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) } while result < 0 && errno == EINTR
        if result < 0 { throw Failure(name: "fcntl", code: errno) }
        repeat { result = fcntl(descriptor, F_SETFD, FD_CLOEXEC) } while result < 0 && errno == EINTR
        if result < 0 { throw Failure(name: "fcntl", code: errno) }
    }
}
