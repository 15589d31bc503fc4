import ColoPacket
import ColoPorts
import ColoStages

#if canImport(Glibc)
    import Glibc
#endif

/// A `socket` port: one QEMU chardev-style stream (TCP or Unix, client or server) carrying frames in QEMU's
/// framing (WIRE.md §1), as filter-mirror, filter-redirector and colo-compare speak it.
///
/// - Server (`server=on`): listens, and serves one peer at a time like QEMU's chardev. While a peer is connected,
///   further connections are accepted and closed at once, counted in `refusedConnections` (QEMU leaves them
///   waiting in the backlog instead; closing them tells the peer plainly). When the peer goes, the next is accepted.
/// - Client (`server=off`): connects without blocking; with `reconnect=N` it tries again every N seconds (from
///   `service(now:)`) after a failed attempt or a lost connection; with `reconnect=0` a failure leaves the port down
///   for good (counted in `errors`, logged once).
/// - A bad frame (L = 0, L > 69632, a bad V, fewer than 14 Ethernet bytes) or a stream cut inside a frame is logged
///   (one line through `log`), counted in `errors`, and closes that connection (`disconnects`); nothing after a bad
///   length can be trusted. Other ports go on.
/// - Output is queued, at most `outputCapacity` bytes, and written as the socket takes it. When a frame does not
///   fit, a peer that is reading is waited for (up to `outputWait`, 50 ms); otherwise the frame is refused and
///   counted in `sendRefused`, so a peer that never reads costs this port its frames, never the data thread more
///   than one wait. Bytes still queued when a connection drops are discarded (`outputDiscardedBytes`); `close`
///   gives them up to 100 ms first.
/// - The connected socket's `recv` and `send` run on the process's socket I/O thread (`SocketStreamPump`,
///   `SocketIOLoop`); the data thread takes what was read in chunks of up to 128 KiB and hands over output in
///   chunks. Accepting, connecting, framing, errors and closing stay on the data thread.
///
/// `receive` takes read chunks until `limit` frames were delivered; one chunk may complete more frames than
/// `limit`, and all of them are delivered (the stream cannot be put back).
///
/// Nothing on the receive or send path allocates: chunks are fixed memory, frames are copied straight into store
/// buffers, and output is encoded in place into the current output chunk.
public final class SocketPort: FramePort {
    public static let defaultOutputCapacity = 1 << 20
    static let readCapacity = 131_072
    /// Largest output chunk: published to the pump once half full or at the end of each data-loop turn.
    static let outputChunkLimit = 262_144

    public let id: String
    public let linkType: LinkType = .ethernet
    public let spec: SocketPortSpec
    // The data thread alone touches a port, and these are read and written for every frame: run-time exclusivity
    // checks on them cost more than the work they guard.
    @exclusivity(unchecked) public private(set) var portCounters = PortCounters()
    /// Connections a server accepted and closed at once because it already had a peer.
    public private(set) var refusedConnections: UInt64 = 0
    /// Queued output bytes dropped because the connection went away before they were written.
    public private(set) var outputDiscardedBytes: UInt64 = 0
    /// The TCP port a server listens on (the kernel's pick for `port=0`); nil for Unix sockets and clients.
    public private(set) var listeningPort: UInt16?
    /// Where the port's error lines go (one line each, no newline); standard error unless replaced.
    public var log: (String) -> Void = SocketPort.standardError

    private let address: SocketAddress
    private let framing: ChardevFraming
    @exclusivity(unchecked) private var decoder: ChardevFrameDecoder
    private var notifyDecoder = NotifyMessageDecoder()
    /// Set when the port is a colo-compare's `notify_dev`: it then carries checkpoint messages (WIRE.md §1), not
    /// frames; each message read is handed here, on the data thread.
    public var notifyHandler: ((NotifyMessage) -> Void)?
    private let encoder: ChardevFrameEncoder
    private var listener: Int32 = -1
    @exclusivity(unchecked) private var connection: Int32 = -1
    @exclusivity(unchecked) private var connecting = false
    /// A client with `reconnect=0` whose connection failed or ended: it stays down.
    private var down = false
    @exclusivity(unchecked) private var closed = false
    private var retryAt: UInt64 = 0
    /// While a peer is connected, further connections are looked for (and refused) every `acceptInterval`, not on
    /// every read: an accept that finds nothing is a system call per turn of the data loop.
    @exclusivity(unchecked) private var acceptDue = true
    @exclusivity(unchecked) private var nextAcceptCheck: UInt64 = 0
    static let acceptInterval: UInt64 = 100_000_000
    /// Set after a failed attempt is logged, so a client retrying every N s logs the first failure only.
    private var failureLogged = false
    private let pump: SocketStreamPump
    private let outputCapacity: Int
    /// The output chunk the data thread encodes into, and how much of it is filled.
    @exclusivity(unchecked) private var outputChunk = 0
    @exclusivity(unchecked) private var outputFill = 0
    /// Output bytes handed to the pump since the connection started, and the pump's written count last read.
    @exclusivity(unchecked) private var publishedBytes = 0
    @exclusivity(unchecked) private var knownWritten = 0
    /// The pump's written count when a wait for room last gave up (-1: none).
    @exclusivity(unchecked) private var stalledAt = -1
    /// Longest wait for room in the output queue while the peer reads nothing. Longer than a scheduler's time
    /// slices: on a loaded two-core machine a reader that is keeping up can still be off the CPU for 10 ms or more,
    /// and 10 ms cost frames in about 1 run in 20 of the 64 x 100 B benchmark.
    static let outputWait: UInt64 = 50_000_000

    /// Opens the port: a server binds and listens now (and throws when it cannot); a client makes its first
    /// connection attempt on the first `service(now:)`, and a failure is counted and logged, not thrown (see
    /// `reconnect=`). The output queue holds at least one largest frame, whatever `outputCapacity` says.
    public init(spec: SocketPortSpec, outputCapacity: Int = SocketPort.defaultOutputCapacity) throws {
        self.spec = spec
        id = spec.id
        address = try SocketAddress(spec.endpoint, portID: spec.id)
        framing = ChardevFraming(vnetHeaderSupport: spec.vnetHeaderSupport)
        decoder = ChardevFrameDecoder(framing: framing)
        encoder = ChardevFrameEncoder(framing: framing)
        // Room for at least one largest frame, whatever `outputCapacity` says.
        let largestFrame = 8 + ChardevFraming.defaultMaxFrameLength
        self.outputCapacity = max(outputCapacity, largestFrame)
        pump = try SocketStreamPump(
            inputChunkSize: Self.readCapacity,
            outputChunkSize: max(min(outputCapacity, Self.outputChunkLimit), largestFrame), name: "port \(spec.id)")
        // Every stored property is set by now, so a throw here still runs deinit, which frees the buffers (freeing
        // them here as well was a double free: a port that could not listen aborted the process).
        if spec.server { try listen() }
    }

    deinit {
        close()
    }

    /// Whether a peer is connected now (tests and logs).
    public var isConnected: Bool { connection >= 0 && !connecting }

    /// Whether the socket I/O thread has read input waiting for `receive` (no system call, no lock).
    public var hasPendingInput: Bool { connection >= 0 && !connecting && pump.hasInput }

    /// Bytes queued for the peer, not yet written.
    public var pendingOutputBytes: Int { publishedBytes - pump.written + outputFill }

    public func appendPollDescriptors(to descriptors: inout [pollfd]) {
        guard !closed else { return }
        if listener >= 0 && (connection < 0 || acceptDue) {
            descriptors.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0))
        }
        guard connection >= 0 else { return }
        if connecting {
            descriptors.append(pollfd(fd: connection, events: Int16(POLLOUT), revents: 0))
        } else {
            descriptors.append(pollfd(fd: pump.wakeDescriptor, events: Int16(POLLIN), revents: 0))
        }
    }

    public func receive(into store: PacketStore, limit: Int, now: UInt64, deliver: (PacketRef) -> Void) -> Int {
        guard !closed else { return 0 }
        if listener >= 0 && (connection < 0 || acceptDue) {
            acceptPending(now: now)
            if connection >= 0 {
                acceptDue = false
                nextAcceptCheck = now &+ Self.acceptInterval
            }
        }
        if connecting { finishConnect(now: now) }
        guard connection >= 0, !connecting else { return 0 }
        publishOutput()
        var delivered = 0
        reading: while delivered < limit, connection >= 0, let input = pump.takeInput() {
            switch input.kind {
            case .data:
                do throws(ChardevError) {
                    if let notifyHandler {
                        try notifyDecoder.feed(input.bytes) { (message: NotifyMessage) throws(ChardevError) in
                            self.portCounters.framesIn &+= 1
                            notifyHandler(message)
                        }
                    } else {
                        try decoder.feed(input.bytes) { (frame: ChardevFrame) throws(ChardevError) in
                            self.take(frame, into: store, now: now, deliver: deliver)
                            delivered += 1
                        }
                    }
                } catch {
                    pump.recycle(input)
                    portCounters.errors &+= 1
                    drop(now: now, reason: "\(error)")
                    break reading
                }
                pump.recycle(input)
            case .endOfStream:
                endOfStream(now: now)
                break reading
            case .readFailed(let code):
                portCounters.errors &+= 1
                drop(now: now, reason: "read failed: \(errnoText(code))")
                break reading
            case .writeFailed(let code):
                portCounters.errors &+= 1
                drop(now: now, reason: "write failed: \(errnoText(code))")
                break reading
            }
        }
        return delivered
    }

    /// Copies one decoded frame into a store buffer and hands it on. A virtio-net header (vnet_hdr_support=on, V > 0)
    /// is kept beside the frame, so that a socket port with vnet_hdr_support sends it on unchanged, as QEMU's
    /// colo-compare, filter-mirror and filter-redirector do.
    private func take(_ frame: ChardevFrame, into store: PacketStore, now: UInt64, deliver: (PacketRef) -> Void) {
        let length = frame.ethernet.count
        guard let ref = store.acquire(length: length) else {
            portCounters.storeFull &+= 1
            return
        }
        UnsafeMutableRawBufferPointer(rebasing: store.buffer(ref)[0..<length]).copyMemory(from: frame.ethernet)
        let meta = store.metadata(ref)
        meta.pointee.length = length
        meta.pointee.linkType = .ethernet
        // V is at most the framing's limit, QEMU's 20, which the store keeps; a longer one (a raised limit) is not.
        if framing.vnetHeaderSupport, frame.vnetHeader.count > 0 { store.setVnetHeader(ref, frame.vnetHeader) }
        meta.pointee.receivedAt = now
        store.reparse(ref)
        portCounters.framesIn &+= 1
        portCounters.bytesIn &+= UInt64(length)
        deliver(ref)
    }

    public func send(_ frame: UnsafeRawBufferPointer, vnetHeader: UnsafeRawBufferPointer) -> Bool {
        guard !closed, connection >= 0, !connecting else {
            portCounters.sendRefused &+= 1
            return false
        }
        // Without vnet_hdr_support the stream has no V field and the header is not sent; with it, a frame that came
        // without one goes out with V = 0.
        let header = framing.vnetHeaderSupport ? vnetHeader : UnsafeRawBufferPointer(start: nil, count: 0)
        let needed = encoder.encodedLength(vnetHeaderLength: header.count, ethernetLength: frame.count)
        guard let chunk = outputRoom(needed) else {
            portCounters.sendRefused &+= 1
            return false
        }
        do throws(ChardevError) {
            outputFill += try encoder.encode(
                vnetHeader: header, ethernet: frame, into: UnsafeMutableRawBufferPointer(rebasing: chunk[outputFill...])
            )
        } catch {
            portCounters.sendRefused &+= 1
            return false
        }
        portCounters.framesOut &+= 1
        portCounters.bytesOut &+= UInt64(header.count + frame.count)
        // Written in bursts: `service` (every loop turn, after the batch that produced these frames) publishes; a
        // half-full chunk goes at once so that the pump is writing while the next half fills.
        if outputFill >= chunk.count / 2 { publishOutput() }
        return true
    }

    /// Queues one checkpoint-channel message (a `notify_dev` port); false, counted, when not connected or full.
    @discardableResult
    public func sendNotify(_ message: NotifyMessage) -> Bool {
        guard !closed, connection >= 0, !connecting else {
            portCounters.sendRefused &+= 1
            return false
        }
        guard let chunk = outputRoom(message.encodedLength) else {
            portCounters.sendRefused &+= 1
            return false
        }
        do throws(ChardevError) {
            outputFill += try message.encode(into: UnsafeMutableRawBufferPointer(rebasing: chunk[outputFill...]))
        } catch {
            portCounters.sendRefused &+= 1
            return false
        }
        portCounters.framesOut &+= 1
        publishOutput()
        return true
    }

    public func service(now: UInt64) {
        guard !closed else { return }
        if !acceptDue && now >= nextAcceptCheck { acceptDue = true }
        if connecting {
            finishConnect(now: now)
        } else if connection >= 0 {
            publishOutput()
        } else if !spec.server && !down && now >= retryAt {
            startConnect(now: now)
        }
    }

    public func close() {
        guard !closed else { return }
        if connection >= 0, !connecting {
            // What is queued gets a moment to go out (a peer that reads takes it; one that does not costs 100 ms).
            publishOutput()
            let deadline = monotonicNanoseconds() &+ 100_000_000
            while pendingOutputBytes > 0 && monotonicNanoseconds() < deadline {
                usleep(1000)
                if outputFill > 0 { publishOutput() }
            }
        }
        closed = true
        if connection >= 0 {
            if !connecting { _ = pump.detach() }
            Glibc.close(connection)
            connection = -1
        }
        if listener >= 0 {
            Glibc.close(listener)
            listener = -1
            if let path = address.unixPath { unlink(path) }
        }
        outputFill = 0
        publishedBytes = 0
        knownWritten = 0
        stalledAt = -1
        pump.stop()
    }

    // MARK: - Connections

    private func listen() throws(SocketPortError) {
        let endpointText = SocketAddress.describe(spec.endpoint)
        let fd = socket(
            address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
            0)
        guard fd >= 0 else { throw SocketPortError("port \(id): socket: \(errnoText(errno))") }
        if let path = address.unixPath {
            // A socket file left by an earlier run would make bind fail; anything else at the path is kept.
            var info = stat()
            if lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK { unlink(path) }
        } else {
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let bound = address.withSockaddr { bind(fd, $0, $1) }
        guard bound == 0, Glibc.listen(fd, 8) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SocketPortError("port \(id): cannot listen on \(endpointText): \(errnoText(code))")
        }
        if address.unixPath == nil {
            var local = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            listeningPort = withUnsafeBytes(of: local) { raw in
                // sin_port and sin6_port sit at the same offset, in network order.
                UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
            }
        }
        listener = fd
    }

    private func acceptPending(now: UInt64) {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 {
                let code = errno
                if code == EINTR || code == ECONNABORTED { continue }
                if code != EAGAIN && code != EWOULDBLOCK {
                    portCounters.errors &+= 1
                    log("port \(id): accept failed: \(errnoText(code))")
                }
                return
            }
            if connection >= 0 {
                Glibc.close(fd)
                refusedConnections &+= 1
                continue
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            adopt(fd)
        }
    }

    private func startConnect(now: UInt64) {
        let fd = socket(
            address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
            0)
        guard fd >= 0 else {
            connectFailed(now: now, reason: "socket: \(errnoText(errno))")
            return
        }
        let result = address.withSockaddr { connect(fd, $0, $1) }
        if result == 0 {
            adopt(fd)
            return
        }
        let code = errno
        if code == EINPROGRESS || code == EAGAIN || code == EINTR {
            connection = fd
            connecting = true
            return
        }
        Glibc.close(fd)
        connectFailed(now: now, reason: errnoText(code))
    }

    private func finishConnect(now: UInt64) {
        var probe = pollfd(fd: connection, events: Int16(POLLOUT), revents: 0)
        guard poll(&probe, 1, 0) > 0 else { return }
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(connection, SOL_SOCKET, SO_ERROR, &code, &length) != 0 { code = errno }
        let fd = connection
        connection = -1
        connecting = false
        if code == 0 {
            adopt(fd)
        } else {
            Glibc.close(fd)
            connectFailed(now: now, reason: errnoText(code))
        }
    }

    private func connectFailed(now: UInt64, reason: String) {
        portCounters.errors &+= 1
        let target = SocketAddress.describe(spec.endpoint)
        if spec.reconnectSeconds == 0 {
            down = true
            log("port \(id): cannot connect to \(target): \(reason); reconnect=0, the port stays down")
        } else {
            if !failureLogged {
                log("port \(id): cannot connect to \(target): \(reason); retrying every \(spec.reconnectSeconds) s")
                failureLogged = true
            }
            retryAt = now &+ UInt64(spec.reconnectSeconds) * 1_000_000_000
        }
    }

    private func adopt(_ fd: Int32) {
        if address.unixPath == nil {
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        connection = fd
        connecting = false
        failureLogged = false
        decoder.reset()
        notifyDecoder.reset()
        outputFill = 0
        publishedBytes = 0
        knownWritten = 0
        stalledAt = -1
        pump.attach(fd)
        portCounters.connects &+= 1
    }

    private func endOfStream(now: UInt64) {
        do throws(ChardevError) {
            if notifyHandler == nil { try decoder.finish() } else { try notifyDecoder.finish() }
            drop(now: now, reason: nil)
        } catch {
            portCounters.errors &+= 1
            drop(now: now, reason: "\(error)")
        }
    }

    /// Closes the connection; `reason` is logged when the drop is an error. A client schedules its reconnect.
    private func drop(now: UInt64?, reason: String?) {
        guard connection >= 0 else { return }
        // The pump lets go of the descriptor before it is closed (and its number possibly reused).
        let unsent = connecting ? 0 : pump.detach()
        Glibc.close(connection)
        connection = -1
        connecting = false
        portCounters.disconnects &+= 1
        outputDiscardedBytes &+= UInt64(unsent + outputFill)
        outputFill = 0
        publishedBytes = 0
        knownWritten = 0
        stalledAt = -1
        decoder.reset()
        notifyDecoder.reset()
        if let reason { log("port \(id): \(reason); connection closed") }
        guard !spec.server else { return }
        if spec.reconnectSeconds == 0 {
            down = true
            if reason == nil { log("port \(id): peer closed the connection; reconnect=0, the port stays down") }
        } else {
            retryAt = (now ?? monotonicNanoseconds()) &+ UInt64(spec.reconnectSeconds) * 1_000_000_000
        }
    }

    // MARK: - Output

    /// The current output chunk when `needed` more bytes fit in it and in the port's bound; nil otherwise (the
    /// frame is refused). A full chunk is handed to the pump first, if the pump has a free one to give back.
    private func outputRoom(_ needed: Int) -> UnsafeMutableRawBufferPointer? {
        if let room = immediateOutputRoom(needed) { return room }
        // Full. A peer that is reading is waited for, up to `outputWait`: its reading is all this port can send
        // (and the data thread, not the kernel, would otherwise be the one to give up frames). A peer that read
        // nothing during the last wait is not waited for again until it has read something.
        let written = pump.written
        guard connection >= 0, !connecting, written != stalledAt else { return nil }
        let deadline = monotonicNanoseconds() &+ Self.outputWait
        while monotonicNanoseconds() < deadline {
            usleep(10)
            if let room = immediateOutputRoom(needed) { return room }
        }
        stalledAt = pump.written
        return nil
    }

    private func immediateOutputRoom(_ needed: Int) -> UnsafeMutableRawBufferPointer? {
        if outputFill + needed > pump.outputChunkSize { publishOutput() }
        guard outputFill + needed <= pump.outputChunkSize else { return nil }
        // Queued bytes, from a possibly stale written count (it only grows): re-read only near the bound.
        if publishedBytes - knownWritten + outputFill + needed > outputCapacity {
            knownWritten = pump.written
            guard publishedBytes - knownWritten + outputFill + needed <= outputCapacity else { return nil }
        }
        return pump.outputChunk(outputChunk)
    }

    /// Hands the filled part of the current output chunk to the pump.
    private func publishOutput() {
        guard outputFill > 0, connection >= 0, !connecting else { return }
        guard let next = pump.publish(outputChunk, count: outputFill) else { return }
        publishedBytes += outputFill
        outputChunk = next
        outputFill = 0
    }

    static func standardError(_ line: String) {
        var text = "colo-proxy: " + line + "\n"
        text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }
}
