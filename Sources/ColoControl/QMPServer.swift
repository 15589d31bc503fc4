import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The QMP control socket: a Unix stream socket (mode 0600) serving any number of QMP clients, one ``QMPSession``
/// each.
///
/// Threading: all socket I/O and every command run on one dedicated I/O thread the server starts (a `poll(2)`
/// loop), so the proxy's data path never waits on a client. ``QMPCommandHandler/execute(name:arguments:)`` is
/// called on that thread. ``broadcast(event:data:)``, the counters and ``stop()`` may be called from any thread,
/// including from inside a command; `broadcast` only queues the event and wakes the loop.
///
/// A client that does not read its answers or events cannot hold up the others: each client's unsent output is
/// capped (``Configuration/maximumOutputBytesPerClient``); past the cap the client is disconnected and the drop is
/// logged.
public final class QMPServer: Sendable {
    /// Limits and hooks; the defaults suit the proxy.
    public struct Configuration: Sendable {
        public var greeting = QMPGreeting()
        /// Connections beyond this many are closed as soon as they are accepted (logged).
        public var maximumClients = 16
        /// Unsent bytes a client may have queued before it is disconnected.
        public var maximumOutputBytesPerClient = 1 << 20
        /// The longest message a client may send (see ``QMPSession``).
        public var maximumMessageBytes = QMPSession.defaultMaximumMessageBytes
        /// Events broadcast but not yet handed to the clients; more are dropped (and counted) until the loop catches
        /// up.
        public var maximumPendingEvents = 4096
        /// Where the server reports connections refused, clients dropped and socket errors (one line each).
        public var log: @Sendable (String) -> Void = QMPServer.logToStandardError

        public init() {}
    }

    /// The socket's path.
    public let path: String
    private let shared: QMPServerShared
    private let wakeWriteDescriptor: Int32
    private let loopFinished = DispatchSemaphore(value: 0)

    /// Creates the socket at `path` and starts serving on a new I/O thread.
    ///
    /// A stale socket at `path` (nobody accepting on it) is replaced; a live one, or any other kind of file, is an
    /// error. The socket file is made mode 0600 before `listen`, so no client can connect while it is wider.
    public init(
        path: String,
        handler: any QMPCommandHandler,
        configuration: Configuration = Configuration()
    ) throws(QMPServerError) {
        self.path = path
        let limit = UnixSocket.maximumPathBytes
        if path.utf8.count > limit || path.isEmpty { throw .pathTooLong(path: path, limit: limit) }
        try QMPServer.removeStaleSocket(at: path)

        let listening: Int32
        let identity: (device: UInt64, inode: UInt64)
        do {
            listening = try UnixSocket.makeStreamSocket()
        } catch {
            throw .systemCall(name: error.name, path: path, errno: error.code)
        }
        do throws(UnixSocket.Failure) {
            try UnixSocket.bindAddress(listening, path: path)
            // Before listen: connecting to a bound socket that is not listening fails, so no one gets in while the
            // file still has the umask's mode.
            if chmod(path, 0o600) != 0 { throw UnixSocket.Failure(name: "chmod", code: errno) }
            guard let status = try UnixSocket.linkStatus(path) else {
                throw UnixSocket.Failure(name: "lstat", code: ENOENT)
            }
            identity = (UInt64(status.st_dev), UInt64(status.st_ino))
            try UnixSocket.startListening(listening, backlog: 16)
        } catch {
            _ = close(listening)
            if error.name != "bind" { _ = unlink(path) }
            throw .systemCall(name: error.name, path: path, errno: error.code)
        }

        let wakeRead: Int32
        let wakeWrite: Int32
        do {
            (wakeRead, wakeWrite) = try UnixSocket.makePipe()
        } catch {
            _ = close(listening)
            _ = unlink(path)
            throw .systemCall(name: error.name, path: path, errno: error.code)
        }
        wakeWriteDescriptor = wakeWrite
        shared = QMPServerShared(maximumPendingEvents: configuration.maximumPendingEvents)

        let loop = QMPServerLoop(
            path: path,
            socketIdentity: identity,
            listeningDescriptor: listening,
            wakeReadDescriptor: wakeRead,
            handler: handler,
            configuration: configuration,
            shared: shared
        )
        let finished = loopFinished
        let thread = Thread {
            loop.run()
            finished.signal()
        }
        thread.name = "colo-qmp"
        thread.start()
    }

    deinit {
        stop()
    }

    /// Sends `event` to every client that has negotiated capabilities, stamped with the current time. Never blocks
    /// on a client; ignored after ``stop()``.
    public func broadcast(event: String, data: JSONObject? = nil) {
        let queued = QMPEvent(name: event, data: data, timestamp: .now())
        shared.state.withLock { state in
            guard !state.stopping else { return }
            guard state.pendingEvents.count < state.maximumPendingEvents else {
                state.droppedEvents += 1
                return
            }
            state.pendingEvents.append(queued)
            wakeLoop()
        }
    }

    /// Closes the socket and every connection, removes the socket file and waits for the I/O thread to end. Called
    /// from a command (on the I/O thread) it returns at once and the loop ends after that command. Idempotent.
    public func stop() {
        let onLoopThread = shared.state.withLock { state -> Bool in
            if !state.stopping {
                state.stopping = true
                wakeLoop()
            }
            guard let loopThread = state.loopThread else { return false }
            return pthread_equal(loopThread, pthread_self()) != 0
        }
        if onLoopThread { return }
        // Wait, then pass the signal on so that later calls return too.
        loopFinished.wait()
        loopFinished.signal()
        shared.state.withLock { state in
            if !state.wakeClosed {
                state.wakeClosed = true
                _ = close(wakeWriteDescriptor)
            }
        }
    }

    /// Clients connected now.
    public var clientCount: Int { shared.state.withLock { $0.clientCount } }
    /// Clients connected now that have negotiated capabilities (those that receive events).
    public var negotiatedClientCount: Int { shared.state.withLock { $0.negotiatedClientCount } }
    /// Clients disconnected so far because their unsent output exceeded the cap.
    public var droppedSlowClientCount: Int { shared.state.withLock { $0.droppedSlowClients } }
    /// Events dropped so far because the loop had too many pending.
    public var droppedEventCount: Int { shared.state.withLock { $0.droppedEvents } }

    /// The default log: one line to standard error.
    public static let logToStandardError: @Sendable (String) -> Void = { message in
        let line = Array("colo-proxy control: \(message)\n".utf8)
        line.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
    }

    /// Call with the state lock held (so the descriptor cannot be closed meanwhile). A full pipe already means
    /// "wake up", so its error is ignored.
    private func wakeLoop() {
        var byte: UInt8 = 1
        _ = write(wakeWriteDescriptor, &byte, 1)
    }

    private static func removeStaleSocket(at path: String) throws(QMPServerError) {
        let status: stat?
        do {
            status = try UnixSocket.linkStatus(path)
        } catch {
            throw .systemCall(name: error.name, path: path, errno: error.code)
        }
        guard let status else { return }
        guard UnixSocket.isSocket(status) else { throw .notASocket(path: path) }
        do {
            try UnixSocket.probe(path: path)
        } catch {
            if error.code != ECONNREFUSED { throw .systemCall(name: error.name, path: path, errno: error.code) }
            if unlink(path) != 0 && errno != ENOENT {
                throw .systemCall(name: "unlink", path: path, errno: errno)
            }
            return
        }
        throw .alreadyServed(path: path)
    }
}

/// What the I/O thread and the callers of ``QMPServer`` share, under one lock.
final class QMPServerShared: Sendable {
    struct State {
        var pendingEvents: [QMPEvent] = []
        var maximumPendingEvents = 4096
        var droppedEvents = 0
        var stopping = false
        var wakeClosed = false
        var loopThread: pthread_t?
        var clientCount = 0
        var negotiatedClientCount = 0
        var droppedSlowClients = 0
    }

    let state: Mutex<State>

    init(maximumPendingEvents: Int) {
        state = Mutex(State(maximumPendingEvents: max(maximumPendingEvents, 1)))
    }
}
