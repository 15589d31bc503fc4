/// One packet the kernel queued to userspace, as handed to the body of ``NetfilterQueue/receive(maxPackets:_:)``.
///
/// The payload points into the queue's receive buffer and is valid **only during that call**; copy what must outlive
/// it. The kernel holds the packet until a verdict for ``id`` is given (or the queue is closed, which drops it).
public struct QueuedPacket {
    /// The kernel's id for the packet, to pass to the verdict calls. Ids increase per queue.
    public var id: UInt32
    /// The packet's link-layer protocol as an EtherType in host order (0x0800 IPv4, 0x86DD IPv6).
    public var hardwareProtocol: UInt16
    /// The netfilter hook that queued the packet (`NF_INET_PRE_ROUTING` 0 … `NF_INET_POST_ROUTING` 4).
    public var hook: UInt8
    /// The packet's netfilter mark (0 if unset).
    public var mark: UInt32
    /// The interface index the packet came in on, 0 if none (locally generated packets).
    public var inputInterfaceIndex: UInt32
    /// The interface index the packet goes out on, 0 if none yet (e.g. in INPUT / PREROUTING).
    public var outputInterfaceIndex: UInt32
    /// The packet from the IP header on (no link-layer header), at most the queue's copy range long.
    public var payload: UnsafeRawBufferPointer

    /// Creates a packet description; ``NetfilterQueue`` builds these, tests and other ports may too.
    public init(
        id: UInt32,
        hardwareProtocol: UInt16,
        hook: UInt8,
        mark: UInt32,
        inputInterfaceIndex: UInt32,
        outputInterfaceIndex: UInt32,
        payload: UnsafeRawBufferPointer
    ) {
        self.id = id
        self.hardwareProtocol = hardwareProtocol
        self.hook = hook
        self.mark = mark
        self.inputInterfaceIndex = inputInterfaceIndex
        self.outputInterfaceIndex = outputInterfaceIndex
        self.payload = payload
    }
}

extension NetfilterQueue {
    /// What the kernel does with a queued packet.
    public enum Verdict: UInt32, Sendable, CustomStringConvertible {
        /// Let the packet continue through the stack (`NF_ACCEPT`).
        case accept = 1
        /// Discard the packet (`NF_DROP`).
        case drop = 0
        /// Run the packet through the same hook again from its start (`NF_REPEAT`); with an unchanged ruleset it
        /// comes back to this queue, so pair it with a mark the rule skips.
        case `repeat` = 4

        public var description: String {
            switch self {
            case .accept: return "accept"
            case .drop: return "drop"
            case .repeat: return "repeat"
            }
        }
    }

    /// What a queue has done since it was opened. Plain counts, updated on the thread that uses the queue.
    public struct Counters: Sendable, Equatable {
        /// Packets handed to a ``NetfilterQueue/receive(maxPackets:_:)`` body.
        public var received: UInt64 = 0
        /// Single-packet accept verdicts sent (with or without a modified payload).
        public var accepted: UInt64 = 0
        /// Single-packet drop verdicts sent.
        public var dropped: UInt64 = 0
        /// Single-packet repeat verdicts sent.
        public var repeated: UInt64 = 0
        /// Batch verdict messages sent; each settles every still-held packet up to its id, however many that is.
        public var batchVerdicts: UInt64 = 0
        /// Times `recv` reported `ENOBUFS`: the socket's receive buffer overflowed and the kernel dropped messages
        /// (packets the kernel then drops, or accepts with fail-open, without this program seeing them).
        public var droppedByKernel: UInt64 = 0
        /// Everything else that went wrong: error replies from the kernel (e.g. a verdict for an unknown id,
        /// `ENOENT`), truncated or unparsable messages, failed verdict sends, failed `recv`s.
        public var errors: UInt64 = 0

        public init() {}
    }

    /// The kernel's own view of a queue, from `/proc/net/netfilter/nfnetlink_queue` of the caller's network namespace.
    public struct KernelStatistics: Sendable, Equatable {
        /// The netlink port id of the socket bound to the queue.
        public var peerPortID: UInt32
        /// Packets held in the kernel waiting for a verdict right now.
        public var queueTotal: UInt32
        /// The copy mode (2 = `NFQNL_COPY_PACKET`).
        public var copyMode: UInt32
        /// Bytes of each packet copied to userspace.
        public var copyRange: UInt32
        /// Packets the kernel dropped because the queue was full (without fail-open).
        public var queueDropped: UInt32
        /// Packets the kernel could not deliver to the socket (receive buffer full) and dropped.
        public var userDropped: UInt32
        /// The last packet id the kernel handed out.
        public var lastID: UInt32
    }
}
