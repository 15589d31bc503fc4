import ColoFragments
import ColoPacket

/// The tracker with fragment reassembly in front of it: what a `conntrack` stage runs.
///
/// Whole datagrams are tracked at once. Fragments are held until their datagram is complete; the reassembled
/// datagram is tracked, and every original fragment gets its result (the fragments, not the reassembled copy,
/// are what travels on). Results arrive through `deliver`, keyed by the caller's token, so the caller keeps
/// its own packets and releases them in whatever order it needs.
public final class FragmentAwareTracker {
    public let tracker: ConnectionTracker
    public let reassembler: FragmentReassembler

    public init(tracker: ConnectionTracker, reassembler: FragmentReassembler = FragmentReassembler()) {
        self.tracker = tracker
        self.reassembler = reassembler
    }

    /// Tracks one packet. `deliver(token, result)` is called for every packet whose state is now known: this
    /// one at once, or, for a fragment, all fragments of its datagram when the last arrives or it is refused.
    public func process(
        _ packet: Packet, zone: UInt16, commit: Bool = true, now: UInt64, token: UInt64,
        deliver: (UInt64, TrackResult) -> Void
    ) {
        guard packet.layout.isFragment else {
            deliver(token, tracker.track(packet, zone: zone, commit: commit, now: now))
            return
        }
        processFragment(packet, zone: zone, commit: commit, now: now, token: token, deliver: deliver)
    }

    /// Kept out of `process`: inlined there, it made the unfragmented path copy the packet's layout before
    /// testing `isFragment` (and the test then waited on that copy).
    @inline(never)
    private func processFragment(
        _ packet: Packet, zone: UInt16, commit: Bool, now: UInt64, token: UInt64,
        deliver: (UInt64, TrackResult) -> Void
    ) {
        switch reassembler.submit(packet.bytes, layout: packet.layout, zone: zone, now: now, token: token) {
        case .notAFragment:
            deliver(token, tracker.track(packet, zone: zone, commit: commit, now: now))
        case .held:
            break
        case .completed(let datagram):
            let whole = Packet(bytes: datagram.bytes, layout: datagram.layout)
            let result = tracker.track(whole, zone: zone, commit: commit, now: now)
            for fragmentToken in datagram.tokens { deliver(fragmentToken, result) }
        case .dropped(let reason, let tokens):
            let result = TrackResult.invalid(Self.invalidReason(reason), zone: zone)
            for fragmentToken in tokens { deliver(fragmentToken, result) }
        }
    }

    /// Expires connections and unfinished datagrams; fragments of expired datagrams are delivered as invalid,
    /// in the zone they were submitted in.
    public func expire(now: UInt64, budget: Int = 4096, deliver: (UInt64, TrackResult) -> Void) {
        tracker.expire(now: now, budget: budget)
        reassembler.expire(now: now) { tokens in
            let result = TrackResult.invalid(.fragmentExpired, zone: tokens.zone)
            for token in tokens { deliver(token, result) }
        }
    }

    /// Gives up every unfinished datagram (end of a capture, shutdown); its fragments are delivered as invalid.
    public func flush(deliver: (UInt64, TrackResult) -> Void) {
        reassembler.flush { tokens in
            let result = TrackResult.invalid(.fragmentExpired, zone: tokens.zone)
            for token in tokens { deliver(token, result) }
        }
    }

    static func invalidReason(_ reason: FragmentDropReason) -> InvalidReason {
        switch reason {
        case .overlap: .fragmentOverlap
        case .tooSmall: .fragmentTooSmall
        case .oversize: .fragmentOversize
        case .tooManyFragments, .tableFull, .memoryFull: .fragmentLimit
        case .timedOut: .fragmentExpired
        case .malformed: .fragmentMalformed
        }
    }
}
