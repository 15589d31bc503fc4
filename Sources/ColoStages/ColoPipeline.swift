import ColoConntrack
import ColoFragments
import ColoPacket

/// The standard COLO chain of SPEC §2, built from its stages:
///
/// ```
/// client ──► conntrack(zone P) ──► primary
///    └──► mirror ──► rewriter (ack += offset) ──► conntrack(zone S) ──► secondary
/// primary ──► conntrack(zone P) ──► colo-compare.primary_in
/// secondary ──► conntrack(zone S) ──► rewriter (seq -= offset) ──► colo-compare.secondary_in
/// colo-compare ──► client
/// ```
///
/// Where the tracker sits: each replica's traffic is tracked in its own zone and always in that replica's own
/// sequence space (client packets to the secondary after rewriting, the secondary's packets before), so the
/// window tracking of both zones is exact.
///
/// The pipeline owns no threads: callers hand it packets (already stored) and drain the output lists after
/// each call. Nothing is allocated per packet once the lists have grown to their working size.
public final class ColoPipeline {
    public static let primaryZone: UInt16 = 1
    public static let secondaryZone: UInt16 = 2

    public let store: PacketStore
    public let tracker: ConnectionTracker
    public let frontEnd: FragmentAwareTracker
    public let rewriter: Rewriter
    public let comparer: Comparer
    /// Whether the rewriter stage is on (`filter-rewriter ... status=`).
    @exclusivity(unchecked) public var rewriterEnabled = true

    /// Packets for the client, the primary and the secondary, in order.
    @exclusivity(unchecked) public var toClient: [PacketRef] = []
    @exclusivity(unchecked) public var toPrimary: [PacketRef] = []
    @exclusivity(unchecked) public var toSecondary: [PacketRef] = []
    /// Mirror copies that could not be made because the store was full.
    @exclusivity(unchecked) public private(set) var mirrorRefused: UInt64 = 0
    /// Per store buffer, the `Continuation` of a packet the fragment front end holds.
    private let continuations: UnsafeMutablePointer<UInt8>

    /// Per connection, the latest pure ACK the secondary could not take yet, delivered once it can (see
    /// `ColoPipeline-Hold.swift`).
    @exclusivity(unchecked) var holds: [SecondaryHold] = []
    /// Which checkpoint interval the secondary ends recorded in the hold words belong to (see `HoldWord`).
    @exclusivity(unchecked) var holdEpoch: UInt64 = 0
    let holdSlot: ExtensionSlot?
    @exclusivity(unchecked) public internal(set) var holdCounters = SecondaryHoldCounters()
    /// At most this many connections keep a pending ACK (beyond, counted in `holdCounters.refused`).
    public static let maxHoldingConnections = 1024
    /// How long a pending ACK may wait for the secondary (then it is dropped; the comparer's own timeout reports
    /// a secondary that never catches up).
    let holdTimeout: UInt64

    /// The tracker configuration the pipeline uses unless told otherwise: the defaults, but without checksum
    /// verification. Every byte the replicas send is compared anyway, the client's stack verifies what it
    /// receives, and verifying would double the per-byte cost of the proxy.
    public static var defaultConntrack: ConntrackConfiguration {
        var configuration = ConntrackConfiguration()
        configuration.checksumValidation = false
        return configuration
    }

    public init(
        store: PacketStore, conntrack: ConntrackConfiguration = ColoPipeline.defaultConntrack,
        compare: CompareConfiguration = CompareConfiguration()
    ) {
        self.store = store
        continuations = .allocate(capacity: store.smallCount + store.largeCount)
        continuations.initialize(repeating: 0, count: store.smallCount + store.largeCount)
        self.tracker = ConnectionTracker(configuration: conntrack)
        self.frontEnd = FragmentAwareTracker(tracker: tracker)
        // A fresh tracker has all its extension words free, so the claim cannot fail.
        let slot = tracker.claimExtension(name: "filter-rewriter") ?? ExtensionSlot(index: 0)
        let timestampSlot = tracker.claimExtension(name: "filter-rewriter-timestamps") ?? ExtensionSlot(index: 1)
        self.rewriter = Rewriter(
            tracker: tracker, slot: slot, timestampSlot: timestampSlot, primaryZone: Self.primaryZone,
            secondaryZone: Self.secondaryZone)
        self.comparer = Comparer(configuration: compare, store: store, tracker: tracker)
        holdSlot = tracker.claimExtension(name: "secondary-ack-hold")
        holdTimeout = max(compare.compareTimeout / 2, 1_000_000)
        holds.reserveCapacity(Self.maxHoldingConnections)
        toClient.reserveCapacity(256)
        toPrimary.reserveCapacity(256)
        toSecondary.reserveCapacity(256)
    }

    deinit { continuations.deallocate() }

    /// A packet from the client: on to the primary, and a rewritten copy to the secondary. After failover the
    /// secondary is the only replica: the packet itself goes there, rewritten.
    public func fromClient(_ ref: PacketRef, now: UInt64) {
        if comparer.failedOver {
            if rewriterEnabled {
                rewriter.rewriteTowardSecondary(ref, in: store)
                // The client has what the primary sent; a secondary that was behind at failover must not get
                // acks for bytes it has yet to send (it would discard them, and the requests that carry them).
                if let (handle, direction) = rewriter.lastTowardSecondary {
                    paceTowardSecondary(ref, handle: handle, clientDirection: direction)
                }
            }
            track(ref, zone: Self.secondaryZone, now: now, then: .toSecondary)
            return
        }
        track(ref, zone: Self.primaryZone, now: now, then: .clientToReplicas)
    }

    /// A client packet, tracked: on to the primary, and a rewritten copy (tracked in the secondary's zone) to
    /// the secondary. The copy of a fragment whose datagram expired is not tracked again (it would wait out a
    /// second timeout in the secondary's zone): it goes on with the original's result.
    private func clientTracked(_ ref: PacketRef, now: UInt64, expired: Bool = false) {
        toPrimary.append(ref)
        guard let copy = duplicate(ref) else {
            mirrorRefused &+= 1
            return
        }
        if rewriterEnabled {
            rewriter.rewriteTowardSecondary(copy, in: store)
            // Before tracking: the secondary's zone then sees the ack its TCP will see.
            if let (handle, direction) = rewriter.lastTowardSecondary {
                paceTowardSecondary(copy, handle: handle, clientDirection: direction)
            }
        }
        if expired {
            store.metadata(copy).pointee.track = .invalid(.fragmentExpired, zone: Self.secondaryZone)
            toSecondary.append(copy)
            return
        }
        track(copy, zone: Self.secondaryZone, now: now, then: .toSecondary)
    }

    /// A packet the primary sent.
    ///
    /// Whole datagrams (nearly every packet) are tracked and passed on directly, not through `track`'s
    /// callback: the two callers differed only in their closures, the optimizer merged them into one thunk
    /// calling through a pointer, and that thunk retained and released the pipeline on every packet.
    public func fromPrimary(_ ref: PacketRef, now: UInt64) {
        if trackWhole(ref, zone: Self.primaryZone, now: now) {
            primaryTracked(ref, now: now)
        } else {
            track(ref, zone: Self.primaryZone, now: now, then: .primaryOutput)
        }
    }

    /// A packet the secondary sent.
    public func fromSecondary(_ ref: PacketRef, now: UInt64) {
        if trackWhole(ref, zone: Self.secondaryZone, now: now) {
            secondaryTracked(ref, now: now)
        } else {
            track(ref, zone: Self.secondaryZone, now: now, then: .secondaryOutput)
        }
    }

    @inline(__always)
    private func primaryTracked(_ ref: PacketRef, now: UInt64) {
        if rewriterEnabled { rewriter.observePrimary(ref, in: store) }
        comparer.primary(ref, now: now)
        drainComparer()
    }

    @inline(__always)
    private func secondaryTracked(_ ref: PacketRef, now: UInt64) {
        noteSecondarySent(ref)
        if !holds.isEmpty { releaseHeld(after: ref) }
        if rewriterEnabled { rewriter.rewriteFromSecondary(ref, in: store) }
        comparer.secondary(ref, now: now)
        drainComparer()
    }

    /// Tracks a parsed whole datagram (what the front end does for one, without its callback) and returns
    /// true; false, doing nothing, for fragments and unparsed packets, which go through `track`.
    @inline(__always)
    private func trackWhole(_ ref: PacketRef, zone: UInt16, now: UInt64) -> Bool {
        let meta = store.metadata(ref)
        guard meta.pointee.parsed, !meta.pointee.layout.isFragment else { return false }
        meta.pointee.track = tracker.track(store.packet(ref), zone: zone, now: now)
        return true
    }

    /// Timeouts: comparison, connections, fragments. Call at least every `expiredScanCycle`.
    public func tick(now: UInt64) {
        if !holds.isEmpty { expireHolds(now: now) }
        comparer.scan(now: now)
        drainComparer()
        frontEnd.expire(now: now) { token, result in
            // A fragment whose datagram never completed: it goes on untracked-invalid, like any bad packet.
            let ref = PacketRef(index: UInt32(truncatingIfNeeded: token))
            store.metadata(ref).pointee.track = result
            resume(ref, now: now, expired: true)
        }
    }

    /// The checkpoint controller reported a checkpoint done.
    public func checkpointDone(now: UInt64) {
        releaseAllHeld()
        holdEpoch &+= 1
        comparer.checkpointDone(now: now)
        rewriter.checkpoint()
        drainComparer()
    }

    /// The primary is lost: the secondary's output goes to the client from now on.
    public func failover(now: UInt64) {
        releaseAllHeld()
        comparer.failover(now: now)
        rewriter.failover()
        drainComparer()
    }

    // MARK: - Internals

    /// What happens to a packet once it is tracked.
    enum Continuation: UInt8 {
        /// Toward the secondary (a client packet's rewritten copy, or after failover the packet itself).
        case toSecondary
        /// A client packet: to the primary, and a copy to the secondary (`clientTracked`).
        case clientToReplicas
        /// The primary's output, to colo-compare.
        case primaryOutput
        /// The secondary's output, rewritten, to colo-compare.
        case secondaryOutput
    }

    /// Goes on with a packet the fragment front end held, when its datagram completed or its fragments expired.
    /// The packet's source does not say where it goes: a client packet's copy toward the secondary has the
    /// secondary as its source, but is input to the secondary, not its output.
    private func resume(_ ref: PacketRef, now: UInt64, expired: Bool = false) {
        switch Continuation(rawValue: continuations[Int(ref.index)]) ?? .toSecondary {
        case .toSecondary: toSecondary.append(ref)
        case .clientToReplicas: clientTracked(ref, now: now, expired: expired)
        case .primaryOutput: primaryTracked(ref, now: now)
        case .secondaryOutput: secondaryTracked(ref, now: now)
        }
    }

    /// Tracks `ref` (fragments are held until their datagram completes, or expire) and continues with every
    /// packet whose state is known.
    private func track(_ ref: PacketRef, zone: UInt16, now: UInt64, then next: Continuation) {
        let meta = store.metadata(ref)
        continuations[Int(ref.index)] = next.rawValue
        guard meta.pointee.parsed else {
            meta.pointee.track = .invalid(.malformed, zone: zone)
            resume(ref, now: now)
            return
        }
        if trackWhole(ref, zone: zone, now: now) {
            resume(ref, now: now)
            return
        }
        frontEnd.process(store.packet(ref), zone: zone, now: now, token: UInt64(ref.index)) { token, result in
            let done = PacketRef(index: UInt32(truncatingIfNeeded: token))
            store.metadata(done).pointee.track = result
            resume(done, now: now)
        }
    }

    func duplicate(_ ref: PacketRef) -> PacketRef? {
        let meta = store.metadata(ref).pointee
        guard let copy = store.acquire(length: meta.length) else { return nil }
        store.buffer(copy).copyMemory(from: store.frame(ref))
        let target = store.metadata(copy)
        target.pointee = meta
        target.pointee.source = .secondary
        target.pointee.next = .max
        return copy
    }

    private func drainComparer() {
        while let ref = comparer.takeReleased() { toClient.append(ref) }
        while let ref = comparer.takeDropped() { store.release(ref) }
    }
}
