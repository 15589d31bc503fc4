import ColoConntrack
import ColoPacket

/// A connection's latest pure ACK for bytes the secondary had not sent yet, kept to be delivered once it has.
struct SecondaryHold {
    var handle: ConnectionHandle
    var pending: PacketRef
    /// The highest ack the secondary got for it so far (lowered copies).
    var acknowledged: UInt32
}

/// The `secondary-ack-hold` extension word of a connection: bits 0–15 its hold's index + 1 (0: none kept), bit 16
/// set when bits 32–63 hold the end of the furthest segment the secondary was seen to send, in its own sequence
/// space, and bits 17–31 the checkpoint interval that end belongs to.
///
/// The end is recorded from every segment the secondary sends, whatever the tracker made of it: the tracker's
/// own record only advances on segments it finds in window, and once it fell behind (a zero-window probe, data
/// right after a window opened) the pacing lowered the client's ACKs below what the secondary had already had
/// acknowledged. An ACK below its snd.una is an old one to the secondary's TCP, window update included: after a
/// failover during a zero window the download stalled for good (about 1 run in 5 of the offload demo).
struct HoldWord {
    var raw: UInt64

    var holdIndexPlusOne: Int { Int(raw & 0xFFFF) }

    func sent(epoch: UInt64) -> UInt32? {
        guard raw & 0x1_0000 != 0, (raw >> 17) & 0x7FFF == epoch & 0x7FFF else { return nil }
        return UInt32(truncatingIfNeeded: raw >> 32)
    }

    func withHold(_ indexPlusOne: Int) -> HoldWord {
        HoldWord(raw: (raw & ~0xFFFF) | UInt64(indexPlusOne & 0xFFFF))
    }

    func withSent(_ end: UInt32, epoch: UInt64) -> HoldWord {
        HoldWord(raw: (raw & 0xFFFF) | 0x1_0000 | (epoch & 0x7FFF) << 17 | UInt64(end) << 32)
    }
}

/// What pacing the client's acks to a lagging secondary did.
public struct SecondaryHoldCounters: Sendable, Equatable {
    /// Client segments toward the secondary whose ack was lowered to what the secondary had sent.
    public var clamped: UInt64 = 0
    /// Pure ACKs kept and delivered whole once the secondary had sent what they acknowledge.
    public var delivered: UInt64 = 0
    /// Kept ACKs dropped: superseded by a newer one, too old (`holdTimeout`), or a checkpoint/failover.
    public var dropped: UInt64 = 0
    /// ACKs that would have been kept but the limits were reached (the clamped copy still went).
    public var refused: UInt64 = 0
    public init() {}
}

// MARK: - Pacing the client's acks to a lagging secondary
//
// The client acknowledges the primary's bytes. Rewritten into the secondary's sequence space, an ACK for bytes the
// secondary has not sent yet is one its TCP must discard with the whole segment, data included (RFC 9293 §3.10.7.4).
// That happens whenever the secondary lags behind the primary: its data then goes unacknowledged in its view (it
// backs off retransmitting into a proxy that drops its copies) and a keep-alive client's next request, which
// acknowledges the primary's whole answer, is lost to it — the secondary never answers and the comparer times out.
//
// So such a segment goes on at once with its ack lowered to what the secondary has sent (acceptable to it, and it
// keeps the secondary's window moving), and a pure ACK is also kept whole, the latest one per connection, and
// delivered once the secondary's own output has reached it. Bounded in count and time; checkpoints and failover
// drop what is kept.
extension ColoPipeline {
    /// Paces the mirror copy `ref` (rewritten, about to be tracked in the secondary's zone, whose entry is
    /// `handle`): clamps its ack when it is ahead of the secondary and keeps a whole copy of a pure ACK for later.
    func paceTowardSecondary(_ ref: PacketRef, handle: ConnectionHandle, clientDirection direction: FlowDirection) {
        guard let slot = holdSlot else { return }
        let meta = store.metadata(ref)
        guard meta.pointee.isCompleteTCP, let word = tracker.extensionWord(handle, slot) else { return }
        // After a checkpoint the secondary restarts from the primary's state: the tracker's record of what it
        // sent is of the old sequence space, so nothing is paced on it.
        guard rewriter.offsetIsCurrent(handle) else { return }
        let frame = store.frame(ref)
        let t = meta.pointee.layout.transportOffset
        let flags = frame[t + 13]
        guard flags & 0x10 != 0 else { return }  // no ACK
        let ack = acknowledgment(ref)
        guard var sent = secondarySent(handle, secondaryIsOriginal: direction != .original) else { return }
        if let seen = HoldWord(raw: word).sent(epoch: holdEpoch), TCPSequence.after(seen, sent) { sent = seen }
        guard TCPSequence.after(ack, sent) else { return }
        let pureACK =
            flags & 0x07 == 0 && meta.pointee.layout.payloadEnd == meta.pointee.layout.payloadOffset
        if pureACK { keep(ref, handle: handle, slot: slot, word: word, acknowledged: sent) }
        // The copy that goes now acknowledges only what the secondary sent.
        lowerAcknowledgment(ref, from: ack, to: sent)
    }

    /// Keeps a whole copy of the pure ACK `ref` as its connection's pending one (replacing an older one).
    private func keep(
        _ ref: PacketRef, handle: ConnectionHandle, slot: ExtensionSlot, word: UInt64, acknowledged: UInt32
    ) {
        let hold = HoldWord(raw: word)
        if hold.holdIndexPlusOne != 0 {
            let index = hold.holdIndexPlusOne - 1
            guard index < holds.count, holds[index].handle == handle else { return }
            guard let copy = duplicate(ref) else {
                holdCounters.refused &+= 1
                return
            }
            store.release(holds[index].pending)
            holdCounters.dropped &+= 1
            holds[index].pending = copy
            holds[index].acknowledged = acknowledged
            return
        }
        guard holds.count < Self.maxHoldingConnections, let copy = duplicate(ref) else {
            holdCounters.refused &+= 1
            return
        }
        holds.append(SecondaryHold(handle: handle, pending: copy, acknowledged: acknowledged))
        tracker.setExtensionWord(handle, slot, hold.withHold(holds.count).raw)
    }

    /// Records how far the secondary has sent on `ref`'s connection (`ref` tracked in its zone, not yet
    /// rewritten): the furthest segment end seen, valid in the tracker's eyes or not (see `HoldWord`).
    func noteSecondarySent(_ ref: PacketRef) {
        guard let slot = holdSlot else { return }
        let meta = store.metadata(ref)
        guard meta.pointee.isCompleteTCP, let (handle, _) = secondaryEntry(ref),
            let word = tracker.extensionWord(handle, slot)
        else { return }
        let end = segmentEnd(ref)
        let hold = HoldWord(raw: word)
        if let seen = hold.sent(epoch: holdEpoch), !TCPSequence.after(end, seen) { return }
        tracker.setExtensionWord(handle, slot, hold.withSent(end, epoch: holdEpoch).raw)
    }

    /// seq + payload + SYN + FIN of a complete TCP segment.
    private func segmentEnd(_ ref: PacketRef) -> UInt32 {
        let meta = store.metadata(ref)
        let frame = store.frame(ref)
        let t = meta.pointee.layout.transportOffset
        let flags = frame[t + 13]
        let seq = UInt32(bigEndian: frame.loadUnaligned(fromByteOffset: t + 4, as: UInt32.self))
        return seq &+ UInt32(truncatingIfNeeded: meta.pointee.layout.payloadEnd - meta.pointee.layout.payloadOffset)
            &+ (flags & 0x02 != 0 ? 1 : 0) &+ (flags & 0x01 != 0 ? 1 : 0)
    }

    /// The secondary sent `ref` (tracked in its zone, not yet rewritten): its connection's pending ACK goes on to
    /// it once it has sent what that acknowledges.
    func releaseHeld(after ref: PacketRef) {
        guard let slot = holdSlot else { return }
        let meta = store.metadata(ref)
        guard meta.pointee.isCompleteTCP, let (handle, direction) = secondaryEntry(ref),
            let word = tracker.extensionWord(handle, slot), HoldWord(raw: word).holdIndexPlusOne != 0
        else { return }
        let index = HoldWord(raw: word).holdIndexPlusOne - 1
        guard index < holds.count, holds[index].handle == handle else { return }
        // How far the secondary has sent: the furthest end seen from it (this segment may be a retransmission),
        // or the tracker's record if that is further.
        var sent = HoldWord(raw: word).sent(epoch: holdEpoch) ?? segmentEnd(ref)
        if let recorded = secondarySent(handle, secondaryIsOriginal: direction == .original),
            TCPSequence.after(recorded, sent)
        {
            sent = recorded
        }
        let pending = holds[index].pending
        let ack = acknowledgment(pending)
        if TCPSequence.after(ack, sent) {
            // Not there yet, but further than before: a lowered copy acknowledges what it sent since (the client
            // has those bytes, from the primary). Without it a secondary whose window is smaller than its lag
            // would wait for an ACK that only comes once it has sent more.
            guard TCPSequence.after(sent, holds[index].acknowledged), let copy = duplicate(pending) else { return }
            lowerAcknowledgment(copy, from: ack, to: sent)
            holds[index].acknowledged = sent
            toSecondary.append(copy)
            return
        }
        toSecondary.append(pending)
        holdCounters.delivered &+= 1
        removeHold(index)
    }

    /// Pending ACKs older than `holdTimeout` are dropped (the secondary did not catch up; the comparer reports it).
    func expireHolds(now: UInt64) {
        var index = 0
        while index < holds.count {
            if now &- store.metadata(holds[index].pending).pointee.receivedAt >= holdTimeout {
                store.release(holds[index].pending)
                holdCounters.dropped &+= 1
                removeHold(index)  // the last hold moves into `index`: look at it next
            } else {
                index += 1
            }
        }
    }

    /// Checkpoint or failover: pending ACKs belong to the old state and are dropped.
    func releaseAllHeld() {
        while let last = holds.indices.last {
            store.release(holds[last].pending)
            holdCounters.dropped &+= 1
            removeHold(last)
        }
    }

    /// Pending ACKs kept now (`query-stats`).
    public var heldForSecondary: Int { holds.count }

    private func removeHold(_ index: Int) {
        if let slot = holdSlot { setHold(holds[index].handle, slot, 0) }
        let last = holds.count - 1
        if index != last {
            holds[index] = holds[last]
            if let slot = holdSlot { setHold(holds[index].handle, slot, index + 1) }
        }
        holds.removeLast()
    }

    /// Sets a connection's hold index, keeping the secondary end recorded in the same word.
    private func setHold(_ handle: ConnectionHandle, _ slot: ExtensionSlot, _ indexPlusOne: Int) {
        guard let word = tracker.extensionWord(handle, slot) else { return }
        tracker.setExtensionWord(handle, slot, HoldWord(raw: word).withHold(indexPlusOne).raw)
    }

    /// The acknowledgment number of a complete TCP segment.
    private func acknowledgment(_ ref: PacketRef) -> UInt32 {
        let t = store.metadata(ref).pointee.layout.transportOffset
        return UInt32(bigEndian: store.frame(ref).loadUnaligned(fromByteOffset: t + 8, as: UInt32.self))
    }

    /// Rewrites the segment's ack from `ack` to `sent` (checksum updated, or left alone when partial).
    private func lowerAcknowledgment(_ ref: PacketRef, from ack: UInt32, to sent: UInt32) {
        let meta = store.metadata(ref)
        let bytes = store.mutableFrame(ref)
        let keepChecksum = PartialChecksum(meta, bytes)
        TCPFieldEditor.addToAcknowledgmentNumber(sent &- ack, in: bytes, layout: meta.pointee.layout)
        keepChecksum.restore(bytes)
        holdCounters.clamped &+= 1
    }

    /// The zone-2 entry of a tracked packet and the packet's direction in it. A packet tracked invalid (an ACK of
    /// data not yet sent is one) carries no handle: the entry is then looked up by its key.
    private func secondaryEntry(_ ref: PacketRef) -> (ConnectionHandle, FlowDirection)? {
        let track = store.metadata(ref).pointee.track
        if tracker.zone(of: track.handle) == Self.secondaryZone { return (track.handle, track.direction) }
        guard let found = tracker.lookup(FlowKey(packet: store.packet(ref), zone: Self.secondaryZone)) else {
            return nil
        }
        return (found.handle, found.direction)
    }

    /// The secondary's highest sent sequence number + 1 (its side of the zone-2 entry); nil before it sent anything.
    private func secondarySent(_ handle: ConnectionHandle, secondaryIsOriginal: Bool) -> UInt32? {
        tracker.withEntry(handle) { entry -> UInt32? in
            let side = secondaryIsOriginal ? entry.original : entry.reply
            return side.end == 0 ? nil : side.end
        } ?? nil
    }
}
