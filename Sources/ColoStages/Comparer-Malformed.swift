import ColoPacket

/// SPEC §8: a packet that cannot be parsed is counted; the primary's goes out uncompared, the secondary's is
/// dropped. Having no flow, malformed packets are paired across the sides in arrival order: two equal frames
/// agree; two different frames, or one side's malformed packet with no malformed counterpart from the other
/// side within `compareTimeout`, are a `protocol` divergence (only one side produced that bad packet).
///
/// Only malformed packets pay for this (a copy of the frame each, for the event); the pending lists are bounded
/// by `maxPendingMalformed` per side, and an overflowing one reports its oldest entry at once.
extension Comparer {
    /// Malformed packets per side kept waiting for their counterpart.
    public static let maxPendingMalformed = 64

    /// Malformed packets waiting for a counterpart, per side.
    public var pendingMalformed: (primary: Int, secondary: Int) {
        (malformedPrimary.count - malformedPrimaryHead, malformedSecondary.count - malformedSecondaryHead)
    }

    func ingestMalformed(_ ref: PacketRef, fromPrimary: Bool, now: UInt64) {
        counters.malformed &+= 1
        let side = self.side(ref)
        if fromPrimary { release(ref) } else { drop(ref) }
        if fromPrimary {
            if let other = popMalformed(fromPrimary: false) {
                if other.frame != side.frame || other.linkType != side.linkType {
                    malformedDivergence(primary: side, secondary: other, now: now)
                }
            } else {
                pushMalformed(side, fromPrimary: true, now: now)
            }
        } else {
            if let other = popMalformed(fromPrimary: true) {
                if other.frame != side.frame || other.linkType != side.linkType {
                    malformedDivergence(primary: other, secondary: side, now: now)
                }
            } else {
                pushMalformed(side, fromPrimary: false, now: now)
            }
        }
    }

    /// Reports malformed packets whose counterpart did not come within `compareTimeout`.
    func expireMalformed(now: UInt64) {
        while malformedPrimaryHead < malformedPrimary.count,
            now &- malformedPrimary[malformedPrimaryHead].timestamp >= configuration.compareTimeout,
            let side = popMalformed(fromPrimary: true)
        {
            malformedDivergence(primary: side, secondary: nil, now: now)
        }
        while malformedSecondaryHead < malformedSecondary.count,
            now &- malformedSecondary[malformedSecondaryHead].timestamp >= configuration.compareTimeout,
            let side = popMalformed(fromPrimary: false)
        {
            malformedDivergence(primary: nil, secondary: side, now: now)
        }
    }

    /// After a checkpoint or failover nothing pending can be compared any more.
    func forgetMalformed() {
        malformedPrimary.removeAll(keepingCapacity: true)
        malformedSecondary.removeAll(keepingCapacity: true)
        malformedPrimaryHead = 0
        malformedSecondaryHead = 0
    }

    private func pushMalformed(_ side: DivergenceSide, fromPrimary: Bool, now: UInt64) {
        if pendingCount(fromPrimary: fromPrimary) >= Self.maxPendingMalformed,
            let oldest = popMalformed(fromPrimary: fromPrimary)
        {
            malformedDivergence(
                primary: fromPrimary ? oldest : nil, secondary: fromPrimary ? nil : oldest, now: now)
        }
        if fromPrimary { malformedPrimary.append(side) } else { malformedSecondary.append(side) }
    }

    private func pendingCount(fromPrimary: Bool) -> Int {
        fromPrimary
            ? malformedPrimary.count - malformedPrimaryHead : malformedSecondary.count - malformedSecondaryHead
    }

    private func popMalformed(fromPrimary: Bool) -> DivergenceSide? {
        fromPrimary
            ? Self.pop(&malformedPrimary, head: &malformedPrimaryHead)
            : Self.pop(&malformedSecondary, head: &malformedSecondaryHead)
    }

    /// The oldest waiting entry of a list read from `head`; the list empties (keeping its capacity) once read.
    private static func pop(_ list: inout [DivergenceSide], head: inout Int) -> DivergenceSide? {
        guard head < list.count else { return nil }
        let side = list[head]
        head += 1
        if head == list.count {
            list.removeAll(keepingCapacity: true)
            head = 0
        }
        return side
    }

    private func malformedDivergence(primary: DivergenceSide?, secondary: DivergenceSide?, now: UInt64) {
        counters.divergences &+= 1
        counters.divergencesByReason[.protocol, default: 0] &+= 1
        let action = configuration.onDivergence
        // No connection to hold: the primary's packet is already out; a checkpoint resynchronises the replicas.
        if action == .checkpoint { checkpointRequested = true }
        events.append(
            DivergenceEvent(
                time: primary?.timestamp ?? secondary?.timestamp ?? now, reason: .protocol, proto: "other",
                family: "none", source: nil, sourcePort: nil, destination: nil, destinationPort: nil,
                streamOffset: nil, primary: primary, secondary: secondary, action: action))
    }
}
