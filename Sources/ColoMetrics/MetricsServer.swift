import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Serves `GET /metrics` (Prometheus text, `text/plain; version=0.0.4`) over HTTP/1.1 on a TCP address; every other
/// path gets 404, other methods 405, malformed requests 400.
///
/// Pull model: on each scrape the server calls `provider` (on its own thread) and renders what it returns, so the
/// data path pays nothing per packet. One `poll(2)` thread serves everything; each connection answers one request and
/// closes. Bounded: at most ``Configuration/maximumConnections`` at once (more are closed on accept and counted), a
/// request head of at most ``Configuration/maximumRequestBytes``, and a client that has not finished its request or
/// read its answer within ``Configuration/timeoutMilliseconds`` is dropped.
public final class MetricsServer: Sendable {
    public struct Configuration: Sendable {
        public var maximumConnections = 16
        public var maximumRequestBytes = 8192
        public var timeoutMilliseconds = 5000
        /// Where refused connections and socket errors are reported (one line each).
        public var log: @Sendable (String) -> Void = { line in
            let bytes = Array(("colo-proxy metrics: " + line + "\n").utf8)
            _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        }

        public init() {}
    }

    /// What the server has done, for tests and `query-stats`.
    public struct Counters: Sendable, Equatable {
        public var scrapes: UInt64 = 0
        /// Requests answered 400, 404, 405 or 431.
        public var rejectedRequests: UInt64 = 0
        /// Connections closed on accept because ``Configuration/maximumConnections`` were open.
        public var refusedConnections: UInt64 = 0
        public var timedOutConnections: UInt64 = 0
    }

    /// The address the socket is bound to (the real port when 0 was asked for).
    public let host: String
    public let port: UInt16
    private let shared = ServerShared()
    private let wakeWrite: Int32
    private let finished = DispatchSemaphore(value: 0)

    /// Binds `HOST:PORT` (see ``parseAddress(_:)``) and starts serving on a new thread.
    public convenience init(
        address: String, configuration: Configuration = Configuration(),
        provider: @escaping @Sendable () -> MetricsSnapshot
    ) throws(MetricsServerError) {
        let (host, port) = try Self.parseAddress(address)
        try self.init(host: host, port: port, configuration: configuration, provider: provider)
    }

    /// Binds `host` (a numeric IPv4 or IPv6 address) on `port` (0: any free port) and starts serving.
    public init(
        host: String, port: UInt16, configuration: Configuration = Configuration(),
        provider: @escaping @Sendable () -> MetricsSnapshot
    ) throws(MetricsServerError) {
        let listening = try Self.listen(host: host, port: port)
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else {
            let code = errno
            close(listening.descriptor)
            throw .systemCall(name: "pipe2", address: "\(host):\(port)", errno: code)
        }
        for end in pipeEnds { setNonBlockingCloseOnExec(end) }
        self.host = host
        self.port = listening.port
        self.wakeWrite = pipeEnds[1]
        let loop = ServerLoop(
            listening: listening.descriptor, wakeRead: pipeEnds[0], configuration: configuration, provider: provider,
            shared: shared)
        let finished = self.finished
        let thread = Thread {
            loop.run()
            finished.signal()
        }
        thread.name = "colo-metrics"
        thread.start()
    }

    deinit { stop() }

    public var counters: Counters { shared.counters.withLock { $0 } }

    /// Stops serving, closes every connection and the socket, and waits for the thread. Idempotent.
    public func stop() {
        guard !shared.stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        finished.wait()
        close(wakeWrite)
    }

    /// Splits `HOST:PORT`: `127.0.0.1:9100`, `[::1]:9100`, `:9100` (all IPv4 addresses), `0.0.0.0:0`.
    public static func parseAddress(_ text: String) throws(MetricsServerError) -> (host: String, port: UInt16) {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw .badAddress(text)
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw .badAddress(text)
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.isEmpty { host = "0.0.0.0" }
        }
        guard !host.isEmpty, let port = UInt16(portText), portText.allSatisfy(\.isNumber) else {
            throw .badAddress(text)
        }
        var scratch = in6_addr()
        guard inet_pton(AF_INET, String(host), &scratch) == 1 || inet_pton(AF_INET6, String(host), &scratch) == 1
        else { throw .badAddress(text) }
        return (String(host), port)
    }

    private static func listen(host: String, port: UInt16) throws(MetricsServerError) -> (
        descriptor: Int32, port: UInt16
    ) {
        let location = "\(host):\(port)"
        var storage = sockaddr_storage()
        var length: socklen_t
        let family: Int32
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            family = AF_INET
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr = v4
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            withUnsafeMutableBytes(of: &storage) { raw in raw.storeBytes(of: address, as: sockaddr_in.self) }
        } else if inet_pton(AF_INET6, host, &v6) == 1 {
            family = AF_INET6
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            address.sin6_addr = v6
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            withUnsafeMutableBytes(of: &storage) { raw in raw.storeBytes(of: address, as: sockaddr_in6.self) }
        } else {
            throw .badAddress(location)
        }
        #if canImport(Glibc)
            let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        #else
            let type = SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK
        #endif
        let descriptor = socket(family, type, 0)
        guard descriptor >= 0 else { throw .systemCall(name: "socket", address: location, errno: errno) }
        var one: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        guard bound == 0, Glibc.listen(descriptor, 64) == 0 else {
            let code = errno
            close(descriptor)
            throw .systemCall(name: bound == 0 ? "listen" : "bind", address: location, errno: code)
        }
        length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        let boundPort: UInt16 = withUnsafeBytes(of: &storage) { raw in
            family == AF_INET
                ? UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
                : UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
        }
        return (descriptor, boundPort)
    }
}

public enum MetricsServerError: Error, Equatable, Sendable, CustomStringConvertible {
    case badAddress(String)
    case systemCall(name: String, address: String, errno: Int32)

    public var description: String {
        switch self {
        case .badAddress(let text):
            return "bad metrics address '\(text)' (accepted: HOST:PORT with a numeric IPv4 address, [IPv6]:PORT,"
                + " or :PORT; port 0 to 65535)"
        case .systemCall(let name, let address, let code):
            return "metrics \(address): \(name): \(String(cString: strerror(code)))"
        }
    }
}

/// What the server object and its thread share; the thread holds this, not the server, so dropping the server
/// (whose deinit stops the thread) is safe.
private final class ServerShared: Sendable {
    let counters = Mutex(MetricsServer.Counters())
    let stopped = Atomic<Bool>(false)

    var isStopping: Bool { stopped.load(ordering: .acquiring) }

    func update(_ body: (inout MetricsServer.Counters) -> Void) { counters.withLock { body(&$0) } }
}

/// The server's thread: the listening socket, the wake pipe and the open connections.
private final class ServerLoop: @unchecked Sendable {
    private struct Connection {
        var descriptor: Int32
        var input: [UInt8] = []
        var output: [UInt8] = []
        var sent = 0
        var deadline: UInt64
        /// The answer is out and our side shut down; reading what the client still sends until it closes, so that
        /// closing does not reset the connection under an answer it has not read yet.
        var draining = false
        var answering: Bool { !output.isEmpty && !draining }
    }

    private let listening: Int32
    private let wakeRead: Int32
    private let configuration: MetricsServer.Configuration
    private let provider: @Sendable () -> MetricsSnapshot
    private let server: ServerShared
    private let renderer = MetricsRenderer()
    private var connections: [Connection] = []

    init(
        listening: Int32, wakeRead: Int32, configuration: MetricsServer.Configuration,
        provider: @escaping @Sendable () -> MetricsSnapshot, shared: ServerShared
    ) {
        self.listening = listening
        self.wakeRead = wakeRead
        self.configuration = configuration
        self.provider = provider
        self.server = shared
    }

    private static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1000 + UInt64(time.tv_nsec) / 1_000_000
    }

    func run() {
        var descriptors: [pollfd] = []
        while !server.isStopping {
            descriptors.removeAll(keepingCapacity: true)
            descriptors.append(pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0))
            descriptors.append(pollfd(fd: listening, events: Int16(POLLIN), revents: 0))
            for connection in connections {
                let events = connection.answering ? POLLOUT : POLLIN
                descriptors.append(pollfd(fd: connection.descriptor, events: Int16(events), revents: 0))
            }
            let ready = poll(&descriptors, nfds_t(descriptors.count), 250)
            if ready < 0 {
                if errno == EINTR { continue }
                configuration.log("poll: \(String(cString: strerror(errno)))")
                break
            }
            if descriptors[0].revents != 0 { break }
            // Connections first (indices match `descriptors[2...]`), then accept, so indices stay valid.
            let now = Self.now()
            var closing: [Int] = []
            for index in connections.indices {
                let revents = descriptors[index + 2].revents
                if revents != 0, !service(&connections[index], revents: revents) {
                    closing.append(index)
                } else if revents == 0, now >= connections[index].deadline {
                    if !connections[index].draining { server.update { $0.timedOutConnections += 1 } }
                    closing.append(index)
                }
            }
            for index in closing.reversed() {
                close(connections[index].descriptor)
                connections.remove(at: index)
            }
            if descriptors[1].revents != 0 { acceptAll(now: now) }
        }
        for connection in connections { close(connection.descriptor) }
        connections.removeAll()
        close(listening)
        close(wakeRead)
    }

    private func acceptAll(now: UInt64) {
        while true {
            let descriptor = accept(listening, nil, nil)
            if descriptor < 0 {
                if errno == EINTR { continue }
                if errno != EAGAIN && errno != EWOULDBLOCK {
                    configuration.log("accept: \(String(cString: strerror(errno)))")
                }
                return
            }
            setNonBlockingCloseOnExec(descriptor)
            guard connections.count < configuration.maximumConnections else {
                // Counted before the close, so whoever sees the close also sees the count.
                server.update { $0.refusedConnections += 1 }
                close(descriptor)
                configuration.log("refused a connection: \(configuration.maximumConnections) already open")
                continue
            }
            connections.append(
                Connection(descriptor: descriptor, deadline: now + UInt64(max(configuration.timeoutMilliseconds, 1))))
        }
    }

    /// Reads or writes what is ready; false when the connection is done (answered or broken).
    private func service(_ connection: inout Connection, revents: Int16) -> Bool {
        if connection.draining {
            var scratch = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = scratch.withUnsafeMutableBytes { recv(connection.descriptor, $0.baseAddress, $0.count, 0) }
                if count > 0 { continue }
                if count < 0, errno == EINTR { continue }
                return count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
            }
        }
        if connection.answering {
            while connection.sent < connection.output.count {
                let written = connection.output[connection.sent...].withUnsafeBytes {
                    send(connection.descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                }
                if written < 0 {
                    if errno == EINTR { continue }
                    return errno == EAGAIN || errno == EWOULDBLOCK
                }
                connection.sent += written
            }
            shutdown(connection.descriptor, Int32(SHUT_WR))
            connection.draining = true
            return service(&connection, revents: Int16(POLLIN))
        }
        if revents & Int16(POLLERR | POLLNVAL) != 0 { return false }
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let room = configuration.maximumRequestBytes + 1 - connection.input.count
            let count = chunk.withUnsafeMutableBytes { recv(connection.descriptor, $0.baseAddress, min(room, 4096), 0) }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                return false
            }
            if count == 0 {
                // The peer closed before sending a whole request head: nothing to answer.
                if connection.input.isEmpty || HTTPRequestHead.endOfHead(in: connection.input) == nil { return false }
                break
            }
            connection.input.append(contentsOf: chunk[0..<count])
            if HTTPRequestHead.endOfHead(in: connection.input) != nil
                || connection.input.count > configuration.maximumRequestBytes
            {
                break
            }
        }
        let status: HTTPStatus
        var body: [UInt8] = []
        if HTTPRequestHead.endOfHead(in: connection.input) == nil {
            guard connection.input.count > configuration.maximumRequestBytes else { return true }
            status = .headerTooLarge
        } else {
            switch HTTPRequestHead.parse(connection.input) {
            case .failure:
                status = .badRequest
            case .success(let head):
                if head.method != "GET" && head.method != "HEAD" {
                    status = .methodNotAllowed
                } else if head.path != "/metrics" {
                    status = .notFound
                } else {
                    status = .ok
                    body = renderer.render(provider())
                    server.update { $0.scrapes += 1 }
                    if head.method == "HEAD" {
                        connection.output = HTTPStatus.response(status, contentLength: body.count, body: [])
                        return service(&connection, revents: Int16(POLLOUT))
                    }
                }
            }
        }
        if status != .ok {
            server.update { $0.rejectedRequests += 1 }
            body = Array("\(status.code) \(status.reason)\n".utf8)
        }
        connection.output = HTTPStatus.response(status, contentLength: body.count, body: body)
        // Try to write at once; what does not fit waits for POLLOUT.
        return service(&connection, revents: Int16(POLLOUT))
    }
}

private func setNonBlockingCloseOnExec(_ descriptor: Int32) {
    _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
    _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
}
