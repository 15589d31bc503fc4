import ColoConntrack
import ColoPacket

/// filter-rewriter (SPEC §4): keeps the secondary's TCP connections in step with the primary's by shifting
/// sequence numbers by a per-connection offset (secondary ISN − primary ISN).
///
/// The state lives in one extension word of the conntrack entries, so it ends with the connection and needs
/// no table of its own: in the secondary zone's entry the offset (or, before it is known, the secondary's ISN),
/// in the primary zone's entry the primary's ISN. The offset is learned from whichever comes first: the two
/// replicas' SYN|ACKs (or SYNs, for connections the guest opens), or the client's ACK completing the handshake
/// (which carries primary ISN + 1), as QEMU's filter-rewriter does.
///
/// Direction conventions: toward the secondary `ack += offset` and the client's SACK edges likewise; from the
/// secondary `seq -= offset`. The secondary's own ack and SACK edges refer to the client's sequence space, the
/// same for both replicas, and are left alone. Checksums are updated incrementally (IPv4 and IPv6).
public final class Rewriter {
    public let tracker: ConnectionTracker
    public let primaryZone: UInt16
    public let secondaryZone: UInt16
    let slot: ExtensionSlot
    /// The same layout for TCP timestamps: the TSval offset (or a replica's TSval while learning). Modern
    /// kernels check that a handshake ACK echoes a TSval they sent, and after failover the client must not see
    /// TSval jump, so timestamps are shifted like sequence numbers.
    let timestampSlot: ExtensionSlot
    /// Bumped by a checkpoint: words from an older epoch mean "offset zero" without visiting every entry.
    @exclusivity(unchecked) private(set) var epoch: UInt16 = 1
    @exclusivity(unchecked) public private(set) var failedOver = false
    @exclusivity(unchecked) public internal(set) var counters = RewriterCounters()
    /// ISNs from SYNs and SYN|ACKs seen before the proxy tracked their connection, by zone-less key: impossible
    /// live (the client's SYN is tracked before the replicas get it) but common in captures recorded with a
    /// little clock skew, or without the client's side. Bounded; oldest forgotten first.
    @exclusivity(unchecked) private var earlyISNs: [FlowKey: (primary: UInt32?, secondary: UInt32?)] = [:]
    @exclusivity(unchecked) private var earlyOrder: [FlowKey] = []
    static let earlyISNLimit = 1024

    /// Fails only when all of the tracker's extension words are taken.
    public convenience init?(tracker: ConnectionTracker, primaryZone: UInt16, secondaryZone: UInt16) {
        guard let slot = tracker.claimExtension(name: "filter-rewriter"),
            let timestampSlot = tracker.claimExtension(name: "filter-rewriter-timestamps")
        else { return nil }
        self.init(
            tracker: tracker, slot: slot, timestampSlot: timestampSlot, primaryZone: primaryZone,
            secondaryZone: secondaryZone)
    }

    /// With extension words already claimed for the rewriter (sequence numbers and timestamps).
    public init(
        tracker: ConnectionTracker, slot: ExtensionSlot, timestampSlot: ExtensionSlot, primaryZone: UInt16,
        secondaryZone: UInt16
    ) {
        self.timestampSlot = timestampSlot
        self.tracker = tracker
        self.primaryZone = primaryZone
        self.secondaryZone = secondaryZone
        self.slot = slot
    }

    /// The word's layout: bits 0–31 offset (or an ISN while learning), 32 offset known, 33 ISN recorded,
    /// 48–63 epoch.
    struct State {
        var value: UInt32
        var offsetKnown: Bool
        var isnKnown: Bool
        var epoch: UInt16

        init(_ word: UInt64) {
            value = UInt32(truncatingIfNeeded: word)
            offsetKnown = word & (1 << 32) != 0
            isnKnown = word & (1 << 33) != 0
            epoch = UInt16(truncatingIfNeeded: word >> 48)
        }

        var word: UInt64 {
            UInt64(value) | (offsetKnown ? 1 << 32 : 0) | (isnKnown ? 1 << 33 : 0) | UInt64(epoch) << 48
        }
    }

    /// The offset a connection is rewritten with: nil while not learned; 0 after a checkpoint.
    public func offset(of handle: ConnectionHandle) -> UInt32? {
        guard let word = tracker.extensionWord(handle, slot) else { return nil }
        let state = State(word)
        if state.epoch != epoch { return word == 0 ? nil : 0 }
        return state.offsetKnown ? state.value : nil
    }

    /// Whether the connection's offset was learned in the current epoch (since the last checkpoint): only then do
    /// the client's acks, rewritten, and the tracker's record of the secondary share one sequence space.
    public func offsetIsCurrent(_ handle: ConnectionHandle) -> Bool {
        guard let word = tracker.extensionWord(handle, slot), word != 0 else { return false }
        let state = State(word)
        return state.epoch == epoch && state.offsetKnown
    }

    /// The offset of the connection whose secondary-zone key (in the replica → client or client → replica
    /// direction) is `key`.
    public func offset(of key: FlowKey) -> UInt32? {
        var zoned = key
        zoned.zone = secondaryZone
        guard let (handle, _) = tracker.lookup(zoned) else { return nil }
        return offset(of: handle)
    }

    // MARK: - The two directions

    /// The secondary-zone entry (and the packet's direction in it) that the last `rewriteTowardSecondary` found;
    /// nil when it found none. Saves the pipeline a second lookup.
    @exclusivity(unchecked) public private(set) var lastTowardSecondary:
        (handle: ConnectionHandle, direction: FlowDirection)?

    /// A client packet about to go to the secondary: `ack += offset`, SACK edges too. Call before tracking it
    /// in the secondary's zone (so the tracker sees the secondary's own sequence space).
    public func rewriteTowardSecondary(_ ref: PacketRef, in store: PacketStore) {
        lastTowardSecondary = nil
        let meta = store.metadata(ref)
        guard meta.pointee.isCompleteTCP else {
            return
        }
        let packet = store.packet(ref)
        guard let tcp = packet.tcp, tcp.flags.contains(.ack) else { return }
        let towardKey = FlowKey(packet: packet, zone: secondaryZone)
        guard let (handle, direction) = tracker.lookup(towardKey) else { return }
        lastTowardSecondary = (handle, direction)
        var delta: UInt32 = 0
        tracker.withEntry(handle) { entry in
            if entry.extensions[slot] == 0 { adoptEarlyISN(towardKey, into: &entry) }
            var state = State(entry.extensions[slot])
            guard entry.extensions[slot] != 0, state.epoch == epoch else { return }
            if !state.offsetKnown {
                // The client's ACK of the handshake carries primary ISN + 1.
                guard state.isnKnown, !failedOver, !tcp.flags.contains(.syn) else { return }
                state.value = state.value &- (tcp.acknowledgmentNumber &- 1)
                state.offsetKnown = true
                state.isnKnown = false
                entry.extensions[slot] = state.word
                counters.learned &+= 1
            }
            delta = state.value
        }
        let layout = meta.pointee.layout
        let bytes = store.mutableFrame(ref)
        let keep = PartialChecksum(meta, bytes)
        defer { keep.restore(bytes) }
        if layout.transportHeaderLength > 20, let echo = timestampEcho(packet) {
            let timestampDelta = learnOrReadTimestampOffset(handle, clientEcho: echo)
            if timestampDelta != 0 {
                TCPFieldEditor.addToTimestamps(valueDelta: 0, echoDelta: timestampDelta, in: bytes, layout: layout)
            }
        }
        guard delta != 0 else { return }
        TCPFieldEditor.addToAcknowledgmentNumber(delta, in: bytes, layout: layout)
        if layout.transportHeaderLength > 20 { TCPFieldEditor.addToSACKEdges(delta, in: bytes, layout: layout) }
        counters.rewrittenTowardSecondary &+= 1
    }

    /// A packet from the secondary, already tracked in its zone: `seq -= offset`. Learns the secondary's ISN
    /// from its SYN|ACK (or SYN).
    public func rewriteFromSecondary(_ ref: PacketRef, in store: PacketStore) {
        let meta = store.metadata(ref)
        guard meta.pointee.isCompleteTCP else {
            return
        }
        // The header fields are read in place: the flow key (and a `Packet` view, a copy of the layout) are
        // only made on the slow paths below.
        let frame = store.frame(ref)
        let transport = meta.pointee.layout.transportOffset
        let syn = frame[transport + 13] & 0x02 != 0
        let seq = UInt32(bigEndian: frame.loadUnaligned(fromByteOffset: transport + 4, as: UInt32.self))
        var handle = meta.pointee.track.handle
        if tracker.zone(of: handle) != secondaryZone {
            let key = FlowKey(packet: store.packet(ref), zone: secondaryZone)
            guard let found = tracker.lookup(key) else {
                if syn && !failedOver { rememberEarlyISN(key, seq, fromPrimary: false) }
                return
            }
            handle = found.handle
        }
        var delta: UInt32 = 0
        // Almost every packet: the offset is known (or was zeroed by a checkpoint); one word answers that.
        let word = tracker.extensionWord(handle, slot) ?? 0
        let known = State(word)
        if word != 0 && (known.epoch != epoch || known.offsetKnown) {
            if known.epoch == epoch { delta = known.value }
        } else {
            let key = FlowKey(packet: store.packet(ref), zone: secondaryZone)
            learnOffset(handle, key: key, syn: syn, seq: seq, delta: &delta)
        }
        let keep = PartialChecksum(meta, store.mutableFrame(ref))
        defer { keep.restore(store.mutableFrame(ref)) }
        if meta.pointee.layout.transportHeaderLength > 20, let value = timestampValue(store.packet(ref)) {
            let timestampDelta = secondaryTimestamp(handle, ref: ref, in: store, value: value, syn: syn)
            if timestampDelta != 0 {
                TCPFieldEditor.addToTimestamps(
                    valueDelta: 0 &- timestampDelta, echoDelta: 0, in: store.mutableFrame(ref),
                    layout: meta.pointee.layout)
            }
        }
        guard delta != 0 else { return }
        TCPFieldEditor.addToSequenceNumber(
            0 &- delta, in: store.mutableFrame(ref), transportOffset: meta.pointee.layout.transportOffset)
        counters.rewrittenFromSecondary &+= 1
    }

    /// The slow path of `rewriteFromSecondary`: the connection's offset is not known yet.
    private func learnOffset(_ handle: ConnectionHandle, key: FlowKey, syn: Bool, seq: UInt32, delta: inout UInt32) {
        tracker.withEntry(handle) { entry in
            if entry.extensions[slot] == 0 && !syn { adoptEarlyISN(key, into: &entry) }
            var state = State(entry.extensions[slot])
            if entry.extensions[slot] != 0 && state.epoch != epoch { return }  // checkpointed: offset zero
            if state.offsetKnown {
                delta = state.value
                return
            }
            guard syn, !failedOver else { return }
            state = State(0)
            state.epoch = epoch
            state.value = seq
            state.isnKnown = true
            var early = key
            early.zone = 0
            if let primaryISN = primaryISN(for: key) ?? earlyISNs[early]?.primary {
                state.value = seq &- primaryISN
                state.offsetKnown = true
                state.isnKnown = false
                delta = state.value
                counters.learned &+= 1
            }
            entry.extensions[slot] = state.word
        }
    }

    /// A packet from the primary (tracked in its zone): its SYN or SYN|ACK gives the primary's ISN, which
    /// together with the secondary's gives the offset without waiting for the client.
    public func observePrimary(_ ref: PacketRef, in store: PacketStore) {
        guard !failedOver else { return }
        let meta = store.metadata(ref)
        guard meta.pointee.isCompleteTCP else {
            return
        }
        // Only SYNs matter here: the flags byte is read in place before anything else is made.
        let transport = meta.pointee.layout.transportOffset
        guard store.frame(ref)[transport + 13] & 0x02 != 0 else { return }
        let packet = store.packet(ref)
        guard let tcp = packet.tcp else { return }
        let isn = tcp.sequenceNumber
        let primaryKey = FlowKey(packet: packet, zone: primaryZone)
        if let value = timestampValue(packet) { observePrimaryTimestamp(primaryKey, value: value) }
        if let (handle, _) = tracker.lookup(primaryKey) {
            tracker.withEntry(handle) { entry in
                var state = State(0)
                state.epoch = epoch
                state.value = isn
                state.isnKnown = true
                entry.extensions[slot] = state.word
            }
        } else {
            rememberEarlyISN(primaryKey, isn, fromPrimary: true)
        }
        // If the secondary's ISN is already known, the offset follows now.
        var secondaryKey = primaryKey
        secondaryKey.zone = secondaryZone
        guard let (secondary, _) = tracker.lookup(secondaryKey) else { return }
        tracker.withEntry(secondary) { entry in
            if entry.extensions[slot] == 0 { adoptEarlyISN(secondaryKey, into: &entry) }
            var state = State(entry.extensions[slot])
            guard state.isnKnown, !state.offsetKnown, state.epoch == epoch else { return }
            state.value = state.value &- isn
            state.offsetKnown = true
            state.isnKnown = false
            entry.extensions[slot] = state.word
            counters.learned &+= 1
        }
    }

    /// Remembers an ISN for a connection the tracker does not hold yet (the key of the replica's SYN or
    /// SYN|ACK, any zone).
    private func rememberEarlyISN(_ key: FlowKey, _ isn: UInt32, fromPrimary: Bool) {
        var key = key
        key.zone = 0
        if earlyISNs[key] == nil {
            if earlyOrder.count >= Self.earlyISNLimit { earlyISNs[earlyOrder.removeFirst()] = nil }
            earlyOrder.append(key)
            earlyISNs[key] = (nil, nil)
        }
        if fromPrimary { earlyISNs[key]?.primary = isn } else { earlyISNs[key]?.secondary = isn }
    }

    /// Fills an unlearned secondary-zone entry from early ISNs (and the primary zone's entry): the offset when
    /// both ISNs are known, else the secondary's ISN.
    private func adoptEarlyISN(_ key: FlowKey, into entry: inout ConnectionEntry) {
        guard !earlyISNs.isEmpty else { return }
        var forward = key
        forward.zone = 0
        for candidate in [forward, forward.reversed()] {
            guard let early = earlyISNs[candidate], let secondaryISN = early.secondary else { continue }
            var primaryKey = candidate
            primaryKey.zone = primaryZone
            let primaryISN = early.primary ?? self.primaryISN(for: primaryKey)
            var state = State(0)
            state.epoch = epoch
            if let primaryISN {
                state.value = secondaryISN &- primaryISN
                state.offsetKnown = true
                counters.learned &+= 1
                earlyISNs[candidate] = nil
                earlyOrder.removeAll { $0 == candidate }
            } else {
                state.value = secondaryISN
                state.isnKnown = true
            }
            entry.extensions[slot] = state.word
            return
        }
    }

    /// The primary's ISN for the connection `key` (a secondary-zone key of a packet from the secondary), if its
    /// SYN or SYN|ACK has been seen.
    private func primaryISN(for key: FlowKey) -> UInt32? {
        var primaryKey = key
        primaryKey.zone = primaryZone
        guard let (handle, _) = tracker.lookup(primaryKey), let word = tracker.extensionWord(handle, slot) else {
            return nil
        }
        let state = State(word)
        return state.isnKnown && state.epoch == epoch ? state.value : nil
    }

    // MARK: - Timestamps

    private func timestampValue(_ packet: Packet) -> UInt32? {
        guard let offset = TCPFieldEditor.timestampOffset(in: packet.bytes, layout: packet.layout) else { return nil }
        return UInt32(bigEndian: packet.bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    private func timestampEcho(_ packet: Packet) -> UInt32? {
        guard let offset = TCPFieldEditor.timestampOffset(in: packet.bytes, layout: packet.layout) else { return nil }
        return UInt32(bigEndian: packet.bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
    }

    /// The primary's SYN or SYN|ACK: its TSval, kept on the primary's entry; the offset follows if the
    /// secondary's is known.
    private func observePrimaryTimestamp(_ primaryKey: FlowKey, value: UInt32) {
        if let (handle, _) = tracker.lookup(primaryKey) {
            tracker.withEntry(handle) { entry in
                var state = State(0)
                state.epoch = epoch
                state.value = value
                state.isnKnown = true
                entry.extensions[timestampSlot] = state.word
            }
        }
        var secondaryKey = primaryKey
        secondaryKey.zone = secondaryZone
        guard let (secondary, _) = tracker.lookup(secondaryKey) else { return }
        tracker.withEntry(secondary) { entry in
            var state = State(entry.extensions[timestampSlot])
            guard state.isnKnown, !state.offsetKnown, state.epoch == epoch else { return }
            state.value = state.value &- value
            state.offsetKnown = true
            state.isnKnown = false
            entry.extensions[timestampSlot] = state.word
        }
    }

    /// A secondary segment's TSval: learns the offset from its SYN|ACK, returns the offset to subtract.
    private func secondaryTimestamp(
        _ handle: ConnectionHandle, ref: PacketRef, in store: PacketStore, value: UInt32, syn: Bool
    ) -> UInt32 {
        // Every segment but the handshake's: the offset is known or zeroed; one word answers that.
        let word = tracker.extensionWord(handle, timestampSlot) ?? 0
        let known = State(word)
        if word != 0 && known.epoch != epoch { return 0 }
        if known.offsetKnown { return known.value }
        if !syn { return 0 }
        var primaryValue: UInt32?
        if let (primary, _) = tracker.lookup(FlowKey(packet: store.packet(ref), zone: primaryZone)),
            let word = tracker.extensionWord(primary, timestampSlot)
        {
            let state = State(word)
            if state.isnKnown && state.epoch == epoch { primaryValue = state.value }
        }
        return tracker.withEntry(handle) { entry -> UInt32 in
            var state = State(entry.extensions[timestampSlot])
            if entry.extensions[timestampSlot] != 0 && state.epoch != epoch { return 0 }
            if state.offsetKnown { return state.value }
            guard syn, !failedOver else { return 0 }
            state = State(0)
            state.epoch = epoch
            if let primaryValue {
                state.value = value &- primaryValue
                state.offsetKnown = true
            } else {
                state.value = value
                state.isnKnown = true
            }
            entry.extensions[timestampSlot] = state.word
            return state.offsetKnown ? state.value : 0
        } ?? 0
    }

    /// A client segment's TSecr (the primary's TSval echoed): the offset to add, learned from the handshake ACK
    /// when the primary's SYN|ACK was not seen.
    private func learnOrReadTimestampOffset(_ handle: ConnectionHandle, clientEcho: UInt32) -> UInt32 {
        tracker.withEntry(handle) { entry -> UInt32 in
            var state = State(entry.extensions[timestampSlot])
            guard entry.extensions[timestampSlot] != 0, state.epoch == epoch else { return 0 }
            if state.offsetKnown { return state.value }
            guard state.isnKnown, !failedOver, clientEcho != 0 else { return 0 }
            state.value = state.value &- clientEcho
            state.offsetKnown = true
            state.isnKnown = false
            entry.extensions[timestampSlot] = state.word
            return state.value
        } ?? 0
    }

    // MARK: - Checkpoint and failover

    /// After a checkpoint the secondary is a copy of the primary: every offset is zero.
    public func checkpoint() {
        epoch = epoch == .max ? 1 : epoch + 1
        counters.checkpoints &+= 1
    }

    /// After failover, tracked connections keep their offsets; new connections are left alone.
    public func failover() {
        failedOver = true
    }
}

/// What the rewriter has done.
public struct RewriterCounters: Sendable, Equatable {
    public var learned: UInt64 = 0
    public var rewrittenTowardSecondary: UInt64 = 0
    public var rewrittenFromSecondary: UInt64 = 0
    public var checkpoints: UInt64 = 0
    public init() {}
}

/// A frame with a partial checksum (read with offloads on): its TCP checksum field holds only the pseudo-header
/// sum, and whoever sends it last sums the header as edited. Edits to seq, ack, SACK edges or timestamps must then
/// leave the field as it was; this saves it before and puts it back after (and does nothing for complete frames).
struct PartialChecksum {
    let offset: Int
    let value: UInt16

    @inline(__always)
    init(_ meta: UnsafeMutablePointer<PacketMetadata>, _ bytes: UnsafeMutableRawBufferPointer) {
        guard meta.pointee.offload.needsChecksum else {
            offset = -1
            value = 0
            return
        }
        offset = meta.pointee.layout.transportOffset + 16
        value = bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self)
    }

    @inline(__always)
    func restore(_ bytes: UnsafeMutableRawBufferPointer) {
        if offset >= 0 { bytes.storeBytes(of: value, toByteOffset: offset, as: UInt16.self) }
    }
}
