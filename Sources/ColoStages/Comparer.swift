import ColoConntrack
import ColoFragments
import ColoPacket

/// colo-compare's parameters (SPEC §2, §3), with QEMU's defaults.
public struct CompareConfiguration: Sendable {
    /// A primary packet older than this with no secondary counterpart is a divergence (ns; QEMU: 3000 ms).
    public var compareTimeout: UInt64 = 3_000_000_000
    /// How often `scan` looks for such packets (ns; QEMU: 1000 ms). The caller drives the scan.
    public var expiredScanCycle: UInt64 = 1_000_000_000
    /// Packets one side may hold queued on one connection before that is a divergence (QEMU: 1024).
    public var maxQueueSize = 1024
    public var onDivergence: DivergenceAction = .release
    /// Connections compared at once; beyond it packets pass uncompared (primary) or are dropped (secondary),
    /// and `counters.connectionsRefused` says so.
    public var maxConnections = 65536
    /// A connection with nothing queued and no packet for this long is forgotten (ns).
    public var idleTimeout: UInt64 = 600_000_000_000

    public init() {}
}

/// What the comparer has done, for metrics and `query-stats`.
public struct CompareCounters: Sendable, Equatable {
    public var primaryPackets: UInt64 = 0
    public var secondaryPackets: UInt64 = 0
    /// Primary packets released to the client.
    public var released: UInt64 = 0
    /// Secondary packets dropped after comparison (and primary packets dropped after failover).
    public var dropped: UInt64 = 0
    /// TCP payload bytes found equal.
    public var bytesCompared: UInt64 = 0
    /// Datagrams and other frames found equal.
    public var datagramsMatched: UInt64 = 0
    public var retransmissions: UInt64 = 0
    public var divergences: UInt64 = 0
    public var divergencesByReason: [DivergenceReason: UInt64] = [:]
    /// Packets that could not be parsed: primary ones released uncompared, secondary ones dropped (SPEC §8).
    public var malformed: UInt64 = 0
    public var connectionsRefused: UInt64 = 0
    public var connectionsCompared: UInt64 = 0
    public var checkpoints: UInt64 = 0

    public init() {}
}

/// colo-compare: matches the secondary's output against the primary's and decides what the client gets.
///
/// TCP is compared as two byte streams ordered by sequence number (the secondary's already rewritten into the
/// primary's sequence space), so different segmentation is not a divergence; UDP/ICMP datagrams must find an
/// equal datagram on the other side; other frames must be equal after the MAC addresses. Packets live in the
/// `PacketStore`; the comparer only queues their refs. Results accumulate in `released`, `dropped`, `events`
/// and `checkpointRequests`, which the caller drains after each call: no callbacks, nothing allocated per packet.
public final class Comparer {
    public let configuration: CompareConfiguration
    public let store: PacketStore
    @exclusivity(unchecked) public internal(set) var counters = CompareCounters()

    /// Primary packets to send to the client, in order (the caller pops them).
    @exclusivity(unchecked) public var released: PacketRefQueue
    /// Packets to return to the store (the caller pops them).
    @exclusivity(unchecked) public var dropped: PacketRefQueue

    /// The oldest released / dropped ref, removed. Other modules pop through these: their own accesses to the
    /// queues above would carry run-time exclusivity checks (the attribute does not cross the module boundary).
    public func takeReleased() -> PacketRef? { released.popFirst() }
    public func takeDropped() -> PacketRef? { dropped.popFirst() }
    public var hasOutput: Bool { !released.isEmpty || !dropped.isEmpty }
    @exclusivity(unchecked) public var events: [DivergenceEvent] = []
    /// Set when a divergence asks the controller for a checkpoint (cleared by the caller).
    @exclusivity(unchecked) public var checkpointRequested = false
    /// After failover the secondary's output goes to the client and nothing is compared.
    @exclusivity(unchecked) public private(set) var failedOver = false
    /// Whether `matchesHead` may settle exactly matching segments without queueing them. Always on; tests turn it
    /// off to check that the general path reaches the same outcome.
    @exclusivity(unchecked) var matchesHeads = true
    /// Segments `matchesHead` settled (for tests; not a user-facing counter).
    @exclusivity(unchecked) var headMatched: UInt64 = 0

    /// Fragments are compared as the datagrams they make up; each side's are reassembled in its own zone.
    let reassembler = FragmentReassembler()
    // Run-time exclusivity checks on these class properties cost more than the work per packet; the comparer
    // is confined to one thread and never hands out references into them.
    @exclusivity(unchecked) var connections = ConnectionSlots()
    @exclusivity(unchecked) var freeConnections: [Int32] = []
    @exclusivity(unchecked) var index: [FlowKey: Int32] = [:]
    /// Packets in all connections' queues, per side (`queuedPackets`).
    @exclusivity(unchecked) private(set) var queuedPrimary = 0
    @exclusivity(unchecked) private(set) var queuedSecondary = 0
    @exclusivity(unchecked) private var lastScan: UInt64 = 0
    /// Malformed packets waiting for the other side's (see Comparer-Malformed.swift); FIFOs from their heads.
    @exclusivity(unchecked) var malformedPrimary: [DivergenceSide] = []
    @exclusivity(unchecked) var malformedSecondary: [DivergenceSide] = []
    @exclusivity(unchecked) var malformedPrimaryHead = 0
    @exclusivity(unchecked) var malformedSecondaryHead = 0
    /// With a tracker, each tracked connection remembers its comparison slot in an extension word, so packets
    /// carrying a conntrack handle need no hash lookup here.
    let tracker: ConnectionTracker
    let extensionSlot: ExtensionSlot
    /// False when no tracker was given: then every packet is looked up by key.
    let usesExtensions: Bool

    public init(
        configuration: CompareConfiguration = CompareConfiguration(), store: PacketStore,
        tracker: ConnectionTracker? = nil
    ) {
        self.configuration = configuration
        self.store = store
        let claimed = tracker?.claimExtension(name: "colo-compare")
        self.tracker = tracker ?? ConnectionTracker()
        self.extensionSlot = claimed ?? ExtensionSlot(index: 0)
        self.usesExtensions = claimed != nil
        released = PacketRefQueue(capacity: store.smallCount + store.largeCount)
        dropped = PacketRefQueue(capacity: store.smallCount + store.largeCount)
        index.reserveCapacity(min(configuration.maxConnections, 4096))
    }

    deinit {
        connections.deallocate()
        released.deallocate()
        dropped.deallocate()
    }

    /// Connections with state in the comparer.
    public var connectionCount: Int { index.count }

    /// Packets held in queues, per side.
    public var queuedPackets: (primary: Int, secondary: Int) { (queuedPrimary, queuedSecondary) }

    /// The same, counted by walking every connection (tests check the running totals against it).
    public var queuedPacketsByWalk: (primary: Int, secondary: Int) {
        var p = 0
        var s = 0
        for slot in connections.indices where connections[slot].inUse {
            p += connections[slot].primary.count
            s += connections[slot].secondary.count
        }
        return (p, s)
    }

    // MARK: - Queues

    // Every change to a connection's queues goes through these, so the totals stay exact: the proxy reads them
    // every loop turn to keep the two inputs close together.
    @inline(__always)
    func enqueue(_ ref: PacketRef, _ slot: Int, primary: Bool) {
        if primary {
            connections[slot].primary.append(ref, store)
            queuedPrimary += 1
        } else {
            connections[slot].secondary.append(ref, store)
            queuedSecondary += 1
        }
    }

    @inline(__always)
    func insertSecondary(_ ref: PacketRef, after previous: PacketRef, _ slot: Int) {
        connections[slot].secondary.insert(ref, after: previous, store)
        queuedSecondary += 1
    }

    @inline(__always)
    func dequeueHead(_ slot: Int, primary: Bool) -> PacketRef {
        if primary {
            queuedPrimary -= 1
            return connections[slot].primary.popHead(store)
        }
        queuedSecondary -= 1
        return connections[slot].secondary.popHead(store)
    }

    @inline(__always) @discardableResult
    func unlink(_ ref: PacketRef, _ slot: Int, primary: Bool) -> Bool {
        if primary {
            guard connections[slot].primary.remove(ref, store) else { return false }
            queuedPrimary -= 1
        } else {
            guard connections[slot].secondary.remove(ref, store) else { return false }
            queuedSecondary -= 1
        }
        return true
    }

    // MARK: - Input

    /// A packet the primary sent (toward the client).
    public func primary(_ ref: PacketRef, now: UInt64) {
        counters.primaryPackets &+= 1
        ingest(ref, fromPrimary: true, now: now)
    }

    /// A packet the secondary sent, already rewritten into the primary's sequence space.
    public func secondary(_ ref: PacketRef, now: UInt64) {
        counters.secondaryPackets &+= 1
        ingest(ref, fromPrimary: false, now: now)
    }

    /// What both sides share: after failover the secondary's packets go out and the primary's are dropped;
    /// packets that cannot be compared (unparsable, refused fragments, no room for their connection) go out
    /// from the primary and are dropped from the secondary.
    private func ingest(_ ref: PacketRef, fromPrimary: Bool, now: UInt64) {
        if failedOver {
            if fromPrimary { drop(ref) } else { release(ref) }
            return
        }
        let meta = store.metadata(ref)
        guard meta.pointee.parsed else {
            ingestMalformed(ref, fromPrimary: fromPrimary, now: now)
            return
        }
        var ref = ref
        if meta.pointee.layout.isFragment {
            guard let whole = reassemble(ref, zone: fromPrimary ? 1 : 2, now: now) else { return }
            ref = whole
        }
        // TCP, nearly every packet, is told from the metadata in place; the rest copy the layout out.
        let whole = store.metadata(ref)
        let kind: Kind = whole.pointee.isCompleteTCP ? .tcp : Self.kind(of: whole.pointee.layout)
        guard let slot = connection(for: ref, kind: kind, now: now) else {
            passUncompared(ref, fromPrimary: fromPrimary)
            return
        }
        connections[slot].lastActivity = now
        switch (kind, fromPrimary) {
        case (.tcp, true): primaryTCP(ref, slot: slot, now: now)
        case (.tcp, false): secondaryTCP(ref, slot: slot, now: now)
        case (_, true): primaryDatagram(ref, slot: slot, now: now)
        case (_, false): secondaryDatagram(ref, slot: slot, now: now)
        }
    }

    @inline(__always)
    private func passUncompared(_ ref: PacketRef, fromPrimary: Bool) {
        if fromPrimary { release(ref) } else { drop(ref) }
    }

    /// Looks for primary packets older than `compareTimeout` and forgets idle connections. Does the work at most
    /// once per `expiredScanCycle`; call it as often as convenient.
    public func scan(now: UInt64) {
        guard now &- lastScan >= configuration.expiredScanCycle else { return }
        lastScan = now
        expireMalformed(now: now)
        reassembler.expire(now: now) { tokens in
            for token in tokens { giveUpFragment(PacketRef(index: UInt32(truncatingIfNeeded: token))) }
        }
        for slot in connections.indices where connections[slot].inUse {
            let head = connections[slot].primary.head
            if !head.isNone, !connections[slot].holding,
                now &- store.metadata(head).pointee.receivedAt >= configuration.compareTimeout
            {
                diverge(slot, .secondaryTimeout, primary: head, secondary: nil, streamOffset: nil, now: now)
            }
            // Secondary packets that found no match within the timeout never will.
            while !connections[slot].secondary.head.isNone,
                now &- store.metadata(connections[slot].secondary.head).pointee.receivedAt
                    >= configuration.compareTimeout,
                connections[slot].kind != .tcp
            {
                drop(dequeueHead(slot, primary: false))
            }
            if connections[slot].primary.isEmpty && connections[slot].secondary.isEmpty
                && (connections[slot].isClosed || now &- connections[slot].lastActivity >= configuration.idleTimeout)
            {
                free(slot)
            }
        }
    }

    /// The controller finished a checkpoint: every held primary packet goes out, every secondary packet is
    /// dropped, and comparison starts again from where the primary is (the secondary is now its copy).
    public func checkpointDone(now: UInt64) {
        counters.checkpoints &+= 1
        forgetMalformed()
        for slot in connections.indices where connections[slot].inUse {
            while !connections[slot].primary.isEmpty { release(dequeueHead(slot, primary: true)) }
            while !connections[slot].secondary.isEmpty { drop(dequeueHead(slot, primary: false)) }
            connections[slot].holding = false
            if connections[slot].haveBase, TCPSequence.after(connections[slot].primaryEnd, connections[slot].verified) {
                connections[slot].verified = connections[slot].primaryEnd
            }
        }
    }

    /// The primary is gone: from now on the secondary's output is what the client gets. Held primary packets are
    /// dropped (the secondary will send the same bytes); held secondary data beyond what was verified is
    /// released in sequence order.
    public func failover(now: UInt64) {
        failedOver = true
        forgetMalformed()
        for slot in connections.indices where connections[slot].inUse {
            while !connections[slot].primary.isEmpty { drop(dequeueHead(slot, primary: true)) }
            while !connections[slot].secondary.isEmpty { release(dequeueHead(slot, primary: false)) }
        }
    }

    // MARK: - Connections

    enum Kind: UInt8 {
        case tcp, datagram, other
    }

    static func kind(of layout: PacketLayout) -> Kind {
        if layout.isTCP && layout.transportHeaderComplete { return .tcp }
        if layout.isIP && !layout.isFragment
            && (layout.transportProtocol == IPProtocol.udp || layout.transportProtocol == IPProtocol.icmp
                || layout.transportProtocol == IPProtocol.icmpv6)
        {
            return .datagram
        }
        return .other
    }

    /// The key packets of one comparison share: the flow for IP (zone-less: both replicas' copies meet), the
    /// EtherType for frames without IP.
    func key(for ref: PacketRef, kind: Kind) -> FlowKey {
        let meta = store.metadata(ref)
        let layout = meta.pointee.layout
        if layout.isIP && (kind != .other || layout.transportHeaderLength > 0) {
            return FlowKey(packet: store.packet(ref), zone: 0)
        }
        if layout.isIP {
            // Other IP protocols and fragments: by addresses and protocol.
            var key = FlowKey(packet: store.packet(ref), zone: 0)
            key.sourcePort = 0
            key.destinationPort = 0
            return key
        }
        return FlowKey(
            sourceLow: 0, destinationLow: 0, sourcePort: layout.etherType, destinationPort: 0, zone: 0,
            protocolNumber: 0, family: 0)
    }

    func connection(for ref: PacketRef, kind: Kind, now: UInt64) -> Int? {
        let handle = store.metadata(ref).pointee.track.handle
        if usesExtensions, !handle.isNone {
            // word: generation << 32 | (slot + 1)
            let word = tracker.extensionWord(handle, extensionSlot) ?? 0
            let slot = Int(word & 0xFFFF_FFFF) - 1
            if slot >= 0, slot < connections.count, connections[slot].inUse,
                UInt32(truncatingIfNeeded: word >> 32) == connections[slot].generation
            {
                return slot
            }
        }
        let slot = lookupOrCreate(ref, kind: kind, now: now)
        if let slot, usesExtensions, !handle.isNone {
            let word = UInt64(connections[slot].generation) << 32 | UInt64(slot + 1)
            tracker.setExtensionWord(handle, extensionSlot, word)
        }
        return slot
    }

    private func lookupOrCreate(_ ref: PacketRef, kind: Kind, now: UInt64) -> Int? {
        let key = key(for: ref, kind: kind)
        if let slot = index[key] { return Int(slot) }
        guard index.count < configuration.maxConnections else {
            counters.connectionsRefused &+= 1
            return nil
        }
        counters.connectionsCompared &+= 1
        var connection = CompareConnection(key: key, kind: kind, now: now)
        let slot: Int
        if let reused = freeConnections.popLast() {
            slot = Int(reused)
            connection.generation = connections[slot].generation &+ 1
            connections[slot] = connection
        } else {
            slot = connections.count
            connections.append(connection)
        }
        index[key] = Int32(slot)
        return slot
    }

    func free(_ slot: Int) {
        index[connections[slot].key] = nil
        connections[slot].inUse = false
        freeConnections.append(Int32(slot))
    }

    // MARK: - Output helpers

    /// Sends a packet on; a reassembled datagram goes as the original fragments it stands for.
    @inline(__always)
    func release(_ ref: PacketRef) {
        counters.released &+= 1
        if store.metadata(ref).pointee.fragmentChain != .max {
            forEachFragment(of: ref) { released.append($0) }
            dropped.append(ref)
            return
        }
        released.append(ref)
    }

    @inline(__always)
    func drop(_ ref: PacketRef) {
        counters.dropped &+= 1
        if store.metadata(ref).pointee.fragmentChain != .max {
            forEachFragment(of: ref) { dropped.append($0) }
        }
        dropped.append(ref)
    }

    private func forEachFragment(of ref: PacketRef, _ body: (PacketRef) -> Void) {
        var current = PacketRef(index: store.metadata(ref).pointee.fragmentChain)
        store.metadata(ref).pointee.fragmentChain = .max
        while !current.isNone {
            let next = store.next(current)
            store.setNext(current, .none)
            body(current)
            current = next
        }
    }

    /// A fragment whose datagram will not be compared: the primary's goes out uncompared, the secondary's is
    /// dropped.
    private func giveUpFragment(_ ref: PacketRef) {
        counters.malformed &+= 1
        if store.metadata(ref).pointee.source == .primary {
            counters.released &+= 1
            released.append(ref)
        } else {
            counters.dropped &+= 1
            dropped.append(ref)
        }
    }

    /// Holds a fragment until its datagram is complete; then returns a stored copy of the datagram that stands
    /// for its fragments. Nil while incomplete, or when the datagram was refused (its fragments then go on
    /// uncompared or are dropped).
    func reassemble(_ ref: PacketRef, zone: UInt16, now: UInt64) -> PacketRef? {
        let meta = store.metadata(ref)
        switch reassembler.submit(
            store.frame(ref), layout: meta.pointee.layout, zone: zone, now: now,
            token: UInt64(ref.index))
        {
        case .notAFragment:
            return ref
        case .held:
            return nil
        case .dropped(_, let tokens):
            for token in tokens { giveUpFragment(PacketRef(index: UInt32(truncatingIfNeeded: token))) }
            return nil
        case .completed(let datagram):
            let linkType: LinkType = datagram.layout.network == .ipv6 ? .rawIPv6 : .rawIPv4
            guard
                let whole = store.store(
                    datagram.bytes, linkType: linkType, source: meta.pointee.source,
                    receivedAt: now)
            else {
                for token in datagram.tokens { giveUpFragment(PacketRef(index: UInt32(truncatingIfNeeded: token))) }
                return nil
            }
            var previous = PacketRef.none
            for token in datagram.tokens {
                let fragment = PacketRef(index: UInt32(truncatingIfNeeded: token))
                store.setNext(fragment, .none)
                if previous.isNone {
                    store.metadata(whole).pointee.fragmentChain = fragment.index
                } else {
                    store.setNext(previous, fragment)
                }
                previous = fragment
            }
            return whole
        }
    }

    // MARK: - Divergence

    func diverge(
        _ slot: Int, _ reason: DivergenceReason, primary: PacketRef?, secondary: PacketRef?, streamOffset: UInt64?,
        now: UInt64
    ) {
        counters.divergences &+= 1
        counters.divergencesByReason[reason, default: 0] &+= 1
        let action = configuration.onDivergence
        events.append(
            makeEvent(
                slot, reason, primary: primary, secondary: secondary, streamOffset: streamOffset,
                action: action, now: now))
        switch action {
        case .checkpoint:
            connections[slot].holding = true
            checkpointRequested = true
        case .release:
            // Log it, let the primary's packets go, and compare again from after them: a single differing byte
            // gives one event, not one per later segment.
            while !connections[slot].primary.isEmpty { release(dequeueHead(slot, primary: true)) }
            if connections[slot].kind == .tcp {
                if TCPSequence.after(connections[slot].primaryEnd, connections[slot].verified) {
                    connections[slot].verified = connections[slot].primaryEnd
                }
                dropVerifiedSecondary(slot)
            } else if let secondary {
                unlink(secondary, slot, primary: false)
                drop(secondary)
            }
        }
    }

    func makeEvent(
        _ slot: Int, _ reason: DivergenceReason, primary: PacketRef?, secondary: PacketRef?, streamOffset: UInt64?,
        action: DivergenceAction, now: UInt64
    ) -> DivergenceEvent {
        let connection = connections[slot]
        let key = connection.key
        var proto = "other"
        var family = "none"
        var source: String?
        var destination: String?
        var sourcePort: UInt16?
        var destinationPort: UInt16?
        if key.family == 4 || key.family == 6 {
            family = key.family == 4 ? "ipv4" : "ipv6"
            proto = IPProtocol.name(key.protocolNumber)
            if proto == "unknown" { proto = String(key.protocolNumber) }
            source = key.sourceAddress.description
            destination = key.destinationAddress.description
            if !key.isICMP && (key.sourcePort != 0 || key.destinationPort != 0) {
                sourcePort = key.sourcePort
                destinationPort = key.destinationPort
            }
        } else if key.sourcePort == EtherType.arp {
            proto = "arp"
        } else {
            proto = "ethertype-0x" + String(key.sourcePort, radix: 16)
        }
        let time =
            primary.map { store.metadata($0).pointee.receivedAt } ?? secondary.map {
                store.metadata($0).pointee.receivedAt
            } ?? now
        return DivergenceEvent(
            time: time, reason: reason, proto: proto, family: family, source: source, sourcePort: sourcePort,
            destination: destination, destinationPort: destinationPort, streamOffset: streamOffset,
            primary: primary.map(side), secondary: secondary.map(side), action: action)
    }

    func side(_ ref: PacketRef) -> DivergenceSide {
        let meta = store.metadata(ref)
        let frame = Array(store.frame(ref))
        var seq: UInt32?
        var bytes = frame
        var length = frame.count
        if meta.pointee.parsed {
            let packet = store.packet(ref)
            if let tcp = packet.tcp { seq = tcp.sequenceNumber }
            if meta.pointee.layout.isIP {
                bytes = Array(packet.payload)
                length = bytes.count
            }
        }
        return DivergenceSide(
            seq: seq, length: length, bytes: Array(bytes.prefix(DivergenceEvent.maxHexBytes)), frame: frame,
            linkType: meta.pointee.linkType, timestamp: meta.pointee.receivedAt)
    }
}

/// Per-connection comparison state.
struct CompareConnection {
    var key: FlowKey
    var kind: Comparer.Kind
    var inUse = true
    /// Changes each time the slot is reused, so extension words naming an old connection are recognised.
    var generation: UInt32 = 0
    var primary = PacketQueue()
    var secondary = PacketQueue()
    var lastActivity: UInt64
    /// Waiting for a checkpoint after a divergence.
    var holding = false

    // TCP only.
    /// `base` and `verified` are set from the first segment seen.
    var haveBase = false
    /// Sequence number of the first byte after SYN (stream offsets count from here).
    var base: UInt32 = 0
    /// Bytes before this sequence number are equal on both sides (or were released).
    var verified: UInt32 = 0
    /// End of the highest primary payload seen.
    var primaryEnd: UInt32 = 0
    var secondarySeen = false
    var primaryFin: UInt32?
    var secondaryFin: UInt32?
    var primaryReset = false
    var secondaryReset = false
    /// A length divergence was reported; one per connection is enough.
    var lengthReported = false

    init(key: FlowKey, kind: Comparer.Kind, now: UInt64) {
        self.key = key
        self.kind = kind
        self.lastActivity = now
    }

    var isClosed: Bool { primaryReset || secondaryReset || (primaryFin != nil && secondaryFin != nil) }
}

/// The comparer's connection slots: a growable array that, unlike `Array`, has no copy-on-write. Every
/// per-packet write into an `Array` element (`connections[slot].verified = ...`) went through a call to
/// `swift_isUniquelyReferenced` first; here an element is written in place through the buffer pointer.
/// Slots are only ever appended (freed ones are reused by the comparer), so indices stay valid.
struct ConnectionSlots {
    private(set) var base: UnsafeMutablePointer<CompareConnection>
    private(set) var count = 0
    private var capacity: Int

    init() {
        capacity = 64
        base = .allocate(capacity: capacity)
    }

    var indices: Range<Int> { 0..<count }

    subscript(slot: Int) -> CompareConnection {
        @inline(__always) unsafeAddress {
            precondition(slot >= 0 && slot < count, "comparer slot out of range")
            return UnsafePointer(base + slot)
        }
        @inline(__always) nonmutating unsafeMutableAddress {
            precondition(slot >= 0 && slot < count, "comparer slot out of range")
            return base + slot
        }
    }

    mutating func append(_ connection: CompareConnection) {
        if count == capacity {
            let grown = UnsafeMutablePointer<CompareConnection>.allocate(capacity: capacity * 2)
            grown.moveInitialize(from: base, count: count)
            base.deallocate()
            base = grown
            capacity *= 2
        }
        (base + count).initialize(to: connection)
        count += 1
    }

    func deallocate() {
        base.deinitialize(count: count)
        base.deallocate()
    }
}

/// A FIFO of packets linked through their metadata (no storage of its own).
struct PacketQueue {
    var head = PacketRef.none
    var tail = PacketRef.none
    var count = 0

    var isEmpty: Bool { head.isNone }

    mutating func append(_ ref: PacketRef, _ store: PacketStore) {
        store.setNext(ref, .none)
        if tail.isNone {
            head = ref
        } else {
            store.setNext(tail, ref)
        }
        tail = ref
        count += 1
    }

    /// Inserts after `previous` (or at the head when `previous` is none).
    mutating func insert(_ ref: PacketRef, after previous: PacketRef, _ store: PacketStore) {
        if previous.isNone {
            store.setNext(ref, head)
            head = ref
        } else {
            store.setNext(ref, store.next(previous))
            store.setNext(previous, ref)
        }
        if store.next(ref).isNone { tail = ref }
        count += 1
    }

    mutating func popHead(_ store: PacketStore) -> PacketRef {
        let ref = head
        head = store.next(ref)
        if head.isNone { tail = .none }
        store.setNext(ref, .none)
        count -= 1
        return ref
    }

    /// Unlinks `ref` wherever it is; returns false when it is not in the queue.
    @discardableResult
    mutating func remove(_ ref: PacketRef, _ store: PacketStore) -> Bool {
        var previous = PacketRef.none
        var current = head
        while !current.isNone {
            if current == ref {
                let next = store.next(current)
                if previous.isNone { head = next } else { store.setNext(previous, next) }
                if tail == current { tail = previous }
                store.setNext(current, .none)
                count -= 1
                return true
            }
            previous = current
            current = store.next(current)
        }
        return false
    }
}

/// Sequence-number arithmetic modulo 2^32.
enum TCPSequence {
    @inline(__always) static func after(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: b &- a) < 0 }
    @inline(__always) static func before(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
    @inline(__always) static func atOrBefore(_ a: UInt32, _ b: UInt32) -> Bool { !after(a, b) }
}
