#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// One connected client, owned by the I/O loop.
final class QMPServerClient {
    let number: Int
    let descriptor: Int32
    let session: QMPSession
    /// Bytes not yet written; `output[outputStart...]` is what remains.
    var output: [UInt8] = []
    var outputStart = 0
    /// Set when the client must be closed at the end of this loop turn.
    var closed = false

    init(number: Int, descriptor: Int32, session: QMPSession) {
        self.number = number
        self.descriptor = descriptor
        self.session = session
    }

    var pendingOutputBytes: Int { output.count - outputStart }
}

/// The server's `poll(2)` loop. Everything here except `shared` is touched only by the I/O thread once ``run()``
/// starts (hence `@unchecked Sendable`: it is handed to that thread once, by ``QMPServer/init``).
final class QMPServerLoop: @unchecked Sendable {
    private let path: String
    private let socketIdentity: (device: UInt64, inode: UInt64)
    private let listeningDescriptor: Int32
    private let wakeReadDescriptor: Int32
    private let handler: any QMPCommandHandler
    private let configuration: QMPServer.Configuration
    private let shared: QMPServerShared
    private var clients: [QMPServerClient] = []
    private var nextClientNumber = 1
    private var reportedDroppedEvents = 0
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)

    init(
        path: String,
        socketIdentity: (device: UInt64, inode: UInt64),
        listeningDescriptor: Int32,
        wakeReadDescriptor: Int32,
        handler: any QMPCommandHandler,
        configuration: QMPServer.Configuration,
        shared: QMPServerShared
    ) {
        self.path = path
        self.socketIdentity = socketIdentity
        self.listeningDescriptor = listeningDescriptor
        self.wakeReadDescriptor = wakeReadDescriptor
        self.handler = handler
        self.configuration = configuration
        self.shared = shared
    }

    func run() {
        shared.state.withLock { $0.loopThread = pthread_self() }
        defer { shutDown() }
        var descriptors: [pollfd] = []
        while true {
            descriptors.removeAll(keepingCapacity: true)
            descriptors.append(pollfd(fd: wakeReadDescriptor, events: Int16(POLLIN), revents: 0))
            descriptors.append(pollfd(fd: listeningDescriptor, events: Int16(POLLIN), revents: 0))
            for client in clients {
                let events = Int16(POLLIN) | (client.pendingOutputBytes > 0 ? Int16(POLLOUT) : 0)
                descriptors.append(pollfd(fd: client.descriptor, events: events, revents: 0))
            }
            let ready = poll(&descriptors, nfds_t(descriptors.count), -1)
            if ready < 0 {
                if errno == EINTR { continue }
                configuration.log("poll failed: \(String(cString: strerror(errno))); control socket closed")
                return
            }

            if descriptors[0].revents != 0 { drainWakePipe() }
            let (events, stopping, droppedEvents) = shared.state.withLock { state in
                defer { state.pendingEvents.removeAll(keepingCapacity: true) }
                return (state.pendingEvents, state.stopping, state.droppedEvents)
            }
            if stopping { return }
            if droppedEvents != reportedDroppedEvents {
                configuration.log("\(droppedEvents - reportedDroppedEvents) events dropped: too many pending")
                reportedDroppedEvents = droppedEvents
            }

            // The clients polled are the first `polledCount`; clients accepted below were not polled yet.
            // Events first: they go to the clients negotiated when they were broadcast.
            for event in events { deliver(event) }
            let polledCount = descriptors.count - 2
            for index in 0..<polledCount {
                let revents = descriptors[index + 2].revents
                if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { readFrom(clients[index]) }
            }
            if descriptors[1].revents != 0 { acceptClients() }
            for client in clients where client.pendingOutputBytes > 0 && !client.closed { flush(client) }
            removeClosedClients()
        }
    }

    // MARK: Clients

    private func acceptClients() {
        while true {
            let descriptor: Int32
            do {
                guard let accepted = try UnixSocket.acceptPending(listeningDescriptor) else { return }
                descriptor = accepted
            } catch {
                // EMFILE and the like: try again on the next turn rather than spin.
                configuration.log("accept failed: \(String(cString: strerror(error.code)))")
                return
            }
            if clients.count >= configuration.maximumClients {
                configuration.log("refusing a client: \(configuration.maximumClients) already connected")
                _ = close(descriptor)
                continue
            }
            let session = QMPSession(
                handler: handler,
                greeting: configuration.greeting,
                maximumMessageBytes: configuration.maximumMessageBytes
            )
            let client = QMPServerClient(number: nextClientNumber, descriptor: descriptor, session: session)
            nextClientNumber += 1
            clients.append(client)
            enqueue(session.greetingLine, for: client)
        }
    }

    private func readFrom(_ client: QMPServerClient) {
        guard !client.closed else { return }
        let received = readBuffer.withUnsafeMutableBytes { buffer in
            Result { () throws(UnixSocket.Failure) in try UnixSocket.receiveAvailable(client.descriptor, into: buffer) }
        }
        let count: Int?
        switch received {
        case .success(let value):
            count = value
        case .failure(let error):
            if error.code != ECONNRESET {
                configuration.log("client \(client.number): recv failed: \(String(cString: strerror(error.code)))")
            }
            client.closed = true
            return
        }
        guard let count else { return }
        if count == 0 {
            client.closed = true
            return
        }
        for answer in client.session.receive(readBuffer[0..<count]) {
            enqueue(answer, for: client)
        }
    }

    private func deliver(_ event: QMPEvent) {
        var line: String?
        for client in clients where client.session.isNegotiated && !client.closed {
            if line == nil { line = event.line }
            if let line { enqueue(line, for: client) }
        }
    }

    private func enqueue(_ line: String, for client: QMPServerClient) {
        guard !client.closed else { return }
        if client.outputStart > 0 && client.outputStart >= client.output.count / 2 {
            client.output.removeFirst(client.outputStart)
            client.outputStart = 0
        }
        client.output.append(contentsOf: line.utf8)
        if client.pendingOutputBytes > configuration.maximumOutputBytesPerClient {
            flush(client)
        }
        if client.pendingOutputBytes > configuration.maximumOutputBytesPerClient {
            configuration.log(
                "client \(client.number) dropped: more than \(configuration.maximumOutputBytesPerClient) bytes unsent"
                    + " (it does not read)")
            client.closed = true
            shared.state.withLock { $0.droppedSlowClients += 1 }
        }
    }

    private func flush(_ client: QMPServerClient) {
        while client.pendingOutputBytes > 0 && !client.closed {
            let sent = client.output.withUnsafeBytes { bytes in
                let remaining = UnsafeRawBufferPointer(rebasing: bytes[client.outputStart...])
                return Result { () throws(UnixSocket.Failure) in
                    try UnixSocket.sendAvailable(client.descriptor, remaining)
                }
            }
            let written: Int
            switch sent {
            case .success(let value):
                written = value
            case .failure(let error):
                if error.code != EPIPE && error.code != ECONNRESET {
                    configuration.log("client \(client.number): send failed: \(String(cString: strerror(error.code)))")
                }
                client.closed = true
                return
            }
            if written == 0 { return }
            client.outputStart += written
        }
        if client.pendingOutputBytes == 0 {
            client.output.removeAll(keepingCapacity: client.output.capacity <= 64 * 1024)
            client.outputStart = 0
        }
    }

    private func removeClosedClients() {
        for client in clients where client.closed { _ = close(client.descriptor) }
        clients.removeAll { $0.closed }
        let negotiated = clients.count { $0.session.isNegotiated }
        let connected = clients.count
        shared.state.withLock { state in
            state.clientCount = connected
            state.negotiatedClientCount = negotiated
        }
    }

    private func drainWakePipe() {
        var bytes = [UInt8](repeating: 0, count: 256)
        while true {
            let count = bytes.withUnsafeMutableBytes { read(wakeReadDescriptor, $0.baseAddress, $0.count) }
            if count > 0 { continue }
            if count < 0 && errno == EINTR { continue }
            return
        }
    }

    private func shutDown() {
        for client in clients { _ = close(client.descriptor) }
        clients.removeAll()
        _ = close(listeningDescriptor)
        _ = close(wakeReadDescriptor)
        // Remove the socket file only if it is still ours (not replaced by another server since).
        if let status = try? UnixSocket.linkStatus(path), UInt64(status.st_dev) == socketIdentity.device,
            UInt64(status.st_ino) == socketIdentity.inode
        {
            _ = unlink(path)
        }
        shared.state.withLock { state in
            state.clientCount = 0
            state.negotiatedClientCount = 0
        }
    }
}
