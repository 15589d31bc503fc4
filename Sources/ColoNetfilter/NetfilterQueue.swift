import CNetfilterQueue

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// One NFQUEUE queue, bound through libnetfilter_queue: packets that an iptables/nftables rule sends to queue
/// `queue` in the **calling thread's network namespace** arrive here, and stay held in the kernel until a verdict.
///
/// Single-threaded: open, poll ``fileDescriptor``, ``receive(maxPackets:_:)`` and give verdicts on one thread (a
/// verdict may be given from inside the receive body). ``close()`` (or deinit) destroys the queue; the kernel then
/// drops the packets still held. Nothing is unbound globally, so other programs' queues are untouched.
public final class NetfilterQueue {
    /// The queue number the rules name (`--queue-num`).
    public let queueNumber: UInt16
    /// The most packets the kernel holds for this queue before it drops (or, with ``failOpen``, accepts) new ones.
    public let maxLength: UInt32
    /// Whether the kernel accepts packets instead of dropping them while the queue is full.
    public let failOpen: Bool
    /// Bytes of each packet the kernel copies to userspace (1…``maximumCopyRange``).
    public let copyRange: UInt32
    /// What this queue has done so far.
    public private(set) var counters = Counters()
    /// The errno of the kernel's most recent error reply read by ``receive(maxPackets:_:)`` (e.g. `ENOENT` after a
    /// verdict for an id the kernel does not hold), 0 if there was none. Each one is also counted in
    /// ``Counters/errors``.
    public private(set) var lastKernelErrno: Int32 = 0
    /// The netlink socket's receive buffer as the kernel reports it (`SO_RCVBUF`; Linux doubles the asked size).
    public private(set) var socketReceiveBufferSize: Int = 0

    /// The default netlink receive buffer: enough for a few thousand MTU-sized packets in flight, so a burst does not
    /// overflow the socket (`ENOBUFS`) before the event loop reads.
    public static let defaultSocketReceiveBufferSize = 8 << 20

    /// The largest copy range the kernel accepts (`NFQNL_MAX_COPY_RANGE`, 0xFFFF less a netlink attribute header:
    /// the payload must fit one attribute). Larger requests are clamped to it, as the kernel would.
    public static let maximumCopyRange: UInt32 = 0xFFFF - 4

    private var handle: OpaquePointer?
    private var queueHandle: OpaquePointer?
    /// Where `recv` puts one netlink message; sized once for the copy range plus the attributes around it.
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    /// The body of the `receive` call in progress; the C callback hands packets to it.
    private var packetHandler: ((QueuedPacket) -> Void)?
    /// Set while `receive` runs: the buffer and the library handle are in use, so `close()` waits for the end.
    private var isReceiving = false
    private var closeRequested = false

    /// The netlink socket to poll for readability, non-blocking; -1 once closed.
    public var fileDescriptor: Int32 {
        guard let handle else { return -1 }
        return nfq_fd(handle)
    }

    /// Whether ``close()`` has run.
    public var isClosed: Bool { handle == nil }

    /// Opens queue `queue` in the calling thread's network namespace. Needs CAP_NET_ADMIN in that namespace.
    ///
    /// - Parameters:
    ///   - queue: the queue number (`--queue-num`); one socket per number per namespace.
    ///   - maxLength: packets the kernel may hold awaiting a verdict (`nfq_set_queue_maxlen`).
    ///   - failOpen: when the queue is full (or the socket cannot take more), accept instead of drop.
    ///   - copyRange: bytes copied per packet; 0 or anything above ``maximumCopyRange`` means the whole packet.
    ///   - socketReceiveBufferSize: the netlink socket's receive buffer, forced past `rmem_max` when permitted.
    public init(
        queue: UInt16,
        maxLength: UInt32 = 1024,
        failOpen: Bool,
        copyRange: UInt32 = 0xFFFF,
        socketReceiveBufferSize: Int = NetfilterQueue.defaultSocketReceiveBufferSize
    ) throws(NetfilterQueueError) {
        let effectiveCopyRange =
            copyRange == 0 || copyRange > Self.maximumCopyRange ? Self.maximumCopyRange : copyRange
        guard let handle = nfq_open() else { throw .openFailed(errno: errno) }
        self.queueNumber = queue
        self.maxLength = maxLength
        self.failOpen = failOpen
        self.copyRange = effectiveCopyRange
        self.handle = handle
        // Netlink header, nfgenmsg and the packet attributes (header, mark, devices, hw address, timestamp, …) take
        // a few hundred bytes; 4 KiB of slack keeps any payload up to the copy range in one untruncated message.
        self.receiveBuffer = .allocate(byteCount: Int(effectiveCopyRange) + 4096, alignment: 16)
        do {
            try configure(handle: handle, socketReceiveBufferSize: socketReceiveBufferSize)
        } catch {
            close()
            throw error
        }
    }

    deinit {
        close()
        receiveBuffer.deallocate()
    }

    private func configure(handle: OpaquePointer, socketReceiveBufferSize: Int) throws(NetfilterQueueError) {
        // Since Linux 3.8 PF_(UN)BIND are no-ops that succeed; older kernels answer EEXIST/EBUSY when another
        // program already bound the family, which is just as good for us.
        for family in [UInt16(AF_INET), UInt16(AF_INET6)] where nfq_bind_pf(handle, family) < 0 {
            let code = errno
            if code != EEXIST && code != EBUSY { throw .bindProtocolFamilyFailed(family: family, errno: code) }
        }

        let context = Unmanaged.passUnretained(self).toOpaque()
        let created = nfq_create_queue(
            handle, queueNumber,
            { _, _, data, context in
                guard let data, let context else { return 0 }
                Unmanaged<NetfilterQueue>.fromOpaque(context).takeUnretainedValue().deliver(data)
                return 0
            }, context)
        guard let created else { throw .createQueueFailed(queue: queueNumber, errno: errno) }
        queueHandle = created

        if nfq_set_mode(created, UInt8(NFQNL_COPY_PACKET.rawValue), copyRange) < 0 {
            throw .setModeFailed(queue: queueNumber, copyRange: copyRange, errno: errno)
        }
        if nfq_set_queue_maxlen(created, maxLength) < 0 {
            throw .setMaxLengthFailed(queue: queueNumber, maxLength: maxLength, errno: errno)
        }
        // GSO stays off: the kernel segments before queueing, so we see packets as they appear on the wire (what the
        // comparison needs) with valid checksums, never 64 KiB super-packets.
        let mask = UInt32(NFQA_CFG_F_FAIL_OPEN) | UInt32(NFQA_CFG_F_GSO)
        let flags = failOpen ? UInt32(NFQA_CFG_F_FAIL_OPEN) : 0
        if nfq_set_queue_flags(created, mask, flags) < 0 {
            throw .setFlagsFailed(queue: queueNumber, flags: flags, errno: errno)
        }

        let descriptor = nfq_fd(handle)
        try setSocketReceiveBufferSize(socketReceiveBufferSize)
        do {
            try SystemCall.setNonBlocking(descriptor)
        } catch {
            throw .socketOptionFailed(option: "O_NONBLOCK", errno: error.code)
        }
    }

    /// Sets the netlink socket's receive buffer: `SO_RCVBUFFORCE` (ignores `net.core.rmem_max`, needs
    /// CAP_NET_ADMIN), falling back to `SO_RCVBUF`. Returns the size the kernel reports afterwards.
    @discardableResult
    public func setSocketReceiveBufferSize(_ bytes: Int) throws(NetfilterQueueError) -> Int {
        guard let handle else { throw .closed(queue: queueNumber) }
        let descriptor = nfq_fd(handle)
        let requested = Int32(clamping: bytes / 2)  // the kernel doubles what it is given
        do {
            do {
                try SystemCall.setSocketOption(descriptor, level: SOL_SOCKET, name: SO_RCVBUFFORCE, value: requested)
            } catch {
                try SystemCall.setSocketOption(descriptor, level: SOL_SOCKET, name: SO_RCVBUF, value: requested)
            }
            socketReceiveBufferSize = Int(try SystemCall.socketOption(descriptor, level: SOL_SOCKET, name: SO_RCVBUF))
        } catch {
            throw .socketOptionFailed(option: "SO_RCVBUF", errno: error.code)
        }
        return socketReceiveBufferSize
    }

    /// Destroys the queue (the kernel drops the packets it still holds for it) and closes the socket. Idempotent.
    /// Called from a receive body, it takes effect when that ``receive(maxPackets:_:)`` returns.
    public func close() {
        if isReceiving {
            closeRequested = true
            return
        }
        if let queueHandle {
            nfq_destroy_queue(queueHandle)
            self.queueHandle = nil
        }
        if let handle {
            nfq_close(handle)
            self.handle = nil
        }
    }

    // MARK: Receiving

    /// Reads the messages waiting on the socket, without blocking, and hands each queued packet to `body`.
    ///
    /// Stops when the socket has nothing more (`EAGAIN`) or `maxPackets` packets were handled (one netlink message
    /// normally carries one packet). `EINTR` is retried; `ENOBUFS` (the kernel overflowed the socket buffer) is
    /// counted in ``Counters/droppedByKernel`` and reading goes on; error replies from the kernel (e.g. `ENOENT` for
    /// a verdict on an unknown id) are counted in ``Counters/errors``. The packet's payload is valid only during
    /// `body`. `body` may give verdicts and call ``close()`` (which then happens on return); calling `receive`
    /// from `body` throws ``NetfilterQueueError/receiveReentered(queue:)``.
    ///
    /// - Returns: how many packets were handed to `body`.
    @discardableResult
    public func receive(maxPackets: Int, _ body: (QueuedPacket) -> Void) throws(NetfilterQueueError) -> Int {
        guard let handle, !closeRequested else { throw .closed(queue: queueNumber) }
        guard !isReceiving else { throw .receiveReentered(queue: queueNumber) }
        guard maxPackets > 0 else { return 0 }
        let descriptor = nfq_fd(handle)
        let receivedBefore = counters.received
        var handled: Int { Int(counters.received &- receivedBefore) }
        // Messages that carry no packet (error replies, cut-short messages) must not keep the loop going forever.
        let maxMessages = maxPackets < Int.max / 2 ? maxPackets * 2 + 16 : Int.max
        var messages = 0

        isReceiving = true
        defer {
            isReceiving = false
            if closeRequested { close() }
        }
        let result: NetfilterQueueError? = withoutActuallyEscaping(body) { escapableBody in
            packetHandler = escapableBody
            defer { packetHandler = nil }

            while handled < maxPackets && messages < maxMessages && !closeRequested {
                messages += 1
                let length: Int
                do throws(SystemCallError) {
                    length = try SystemCall.receive(
                        descriptor, into: receiveBuffer, flags: Int32(MSG_DONTWAIT) | Int32(MSG_TRUNC))
                } catch {
                    switch error.code {
                    case EAGAIN, EWOULDBLOCK:
                        return nil
                    case ENOBUFS:
                        counters.droppedByKernel += 1
                        continue
                    default:
                        counters.errors += 1
                        return .receiveFailed(queue: queueNumber, errno: error.code)
                    }
                }
                guard length > 0, length <= receiveBuffer.count, let start = receiveBuffer.baseAddress else {
                    // A message larger than the buffer arrived cut short: parsing it would misread attributes.
                    counters.errors += 1
                    continue
                }
                if let kernelErrno = Self.errorReply(in: UnsafeRawBufferPointer(start: start, count: length)) {
                    // libnfnetlink fails on these without saying why, so they are read here instead.
                    if kernelErrno != 0 {
                        lastKernelErrno = kernelErrno
                        counters.errors += 1
                    }
                    continue
                }
                if nfq_handle_packet(handle, start.assumingMemoryBound(to: CChar.self), Int32(length)) < 0 {
                    counters.errors += 1
                }
            }
            return nil
        }
        if let result { throw result }
        return handled
    }

    /// The errno of a netlink error reply (`NLMSG_ERROR`; 0 for a plain acknowledgement), or nil for any other
    /// message. The kernel sends each error reply in a datagram of its own, so the first header decides.
    private static func errorReply(in message: UnsafeRawBufferPointer) -> Int32? {
        // struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; } then struct nlmsgerr { s32 error; … }.
        guard message.count >= 20, message.loadUnaligned(fromByteOffset: 4, as: UInt16.self) == NLMSG_ERROR else {
            return nil
        }
        return -message.loadUnaligned(fromByteOffset: 16, as: Int32.self)
    }

    /// Called (through the C callback) by `nfq_handle_packet` for each packet message.
    private func deliver(_ data: OpaquePointer) {
        guard let header = nfq_get_msg_packet_hdr(data) else {
            counters.errors += 1
            return
        }
        // struct nfqnl_msg_packet_hdr is packed: { __be32 packet_id; __be16 hw_protocol; __u8 hook; }.
        let raw = UnsafeRawPointer(header)
        let id = UInt32(bigEndian: raw.loadUnaligned(as: UInt32.self))
        let hardwareProtocol = UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        let hook = raw.load(fromByteOffset: 6, as: UInt8.self)

        var payloadStart: UnsafeMutablePointer<UInt8>? = nil
        let payloadLength = nfq_get_payload(data, &payloadStart)
        let payload =
            payloadLength > 0
            ? UnsafeRawBufferPointer(start: payloadStart, count: Int(payloadLength))
            : UnsafeRawBufferPointer(start: nil, count: 0)

        counters.received += 1
        packetHandler?(
            QueuedPacket(
                id: id,
                hardwareProtocol: hardwareProtocol,
                hook: hook,
                mark: nfq_get_nfmark(data),
                inputInterfaceIndex: nfq_get_indev(data),
                outputInterfaceIndex: nfq_get_outdev(data),
                payload: payload
            )
        )
    }

    // MARK: Verdicts

    /// Gives the verdict for one held packet (`nfq_set_verdict`).
    ///
    /// The send is synchronous; if the kernel rejects the verdict (e.g. no packet with that id is held: `ENOENT`),
    /// its error reply arrives on the socket and is counted by the next ``receive(maxPackets:_:)``.
    public func verdict(id: UInt32, _ verdict: Verdict) throws(NetfilterQueueError) {
        guard let queueHandle else { throw .closed(queue: queueNumber) }
        if nfq_set_verdict(queueHandle, id, verdict.rawValue, 0, nil) < 0 {
            counters.errors += 1
            throw .verdictFailed(queue: queueNumber, id: id, errno: errno)
        }
        switch verdict {
        case .accept: counters.accepted += 1
        case .drop: counters.dropped += 1
        case .repeat: counters.repeated += 1
        }
    }

    /// Accepts one held packet with `payload` in place of its bytes (a rewritten IP packet, checksums already
    /// fixed by the caller). The kernel copies the bytes before this returns.
    public func verdict(id: UInt32, acceptWithModifiedPayload payload: UnsafeRawBufferPointer)
        throws(NetfilterQueueError)
    {
        guard let queueHandle else { throw .closed(queue: queueNumber) }
        // The payload travels in one netlink attribute, whose 16-bit length includes its 4-byte header.
        guard payload.count <= Int(Self.maximumCopyRange) else {
            counters.errors += 1
            throw .payloadTooLarge(queue: queueNumber, id: id, length: payload.count)
        }
        let bytes = payload.baseAddress?.assumingMemoryBound(to: UInt8.self)
        if nfq_set_verdict(queueHandle, id, Verdict.accept.rawValue, UInt32(payload.count), bytes) < 0 {
            counters.errors += 1
            throw .verdictFailed(queue: queueNumber, id: id, errno: errno)
        }
        counters.accepted += 1
    }

    /// Gives one verdict for every packet still held with an id up to and including `id`, in a single message
    /// (`nfq_set_verdict_batch`): how consecutive releases are sent cheaply.
    public func batchVerdict(upTo id: UInt32, _ verdict: Verdict) throws(NetfilterQueueError) {
        guard let queueHandle else { throw .closed(queue: queueNumber) }
        if nfq_set_verdict_batch(queueHandle, id, verdict.rawValue) < 0 {
            counters.errors += 1
            throw .batchVerdictFailed(queue: queueNumber, id: id, errno: errno)
        }
        counters.batchVerdicts += 1
    }

    // MARK: Kernel statistics

    /// The kernel's counters for this queue, read from `/proc/thread-self/net/netfilter/nfnetlink_queue` (so from the
    /// calling thread's network namespace, which must be the queue's). Allocates; for monitoring, not per packet.
    public func kernelStatistics() throws(NetfilterQueueError) -> KernelStatistics {
        let bytes: [UInt8]
        do {
            bytes = try SystemCall.readFile("/proc/thread-self/net/netfilter/nfnetlink_queue")
        } catch {
            throw .statisticsUnavailable(queue: queueNumber, errno: error.code)
        }
        // Each line: queue_number peer_portid queue_total copy_mode copy_range queue_dropped user_dropped id_sequence 1
        for line in bytes.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: " ")).compactMap {
                UInt32(String(decoding: $0, as: UTF8.self))
            }
            guard fields.count >= 8, fields[0] == UInt32(queueNumber) else { continue }
            return KernelStatistics(
                peerPortID: fields[1],
                queueTotal: fields[2],
                copyMode: fields[3],
                copyRange: fields[4],
                queueDropped: fields[5],
                userDropped: fields[6],
                lastID: fields[7]
            )
        }
        throw .statisticsUnavailable(queue: queueNumber, errno: ENOENT)
    }
}
