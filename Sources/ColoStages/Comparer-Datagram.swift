import ColoPacket

#if canImport(Glibc)
    import Glibc
#endif

/// UDP, ICMP, ICMPv6: each primary datagram needs an equal datagram from the secondary (searched in the flow's
/// queue, so reordering between flows or within one does not matter). Other frames (ARP, non-IP, other IP
/// protocols) likewise, compared whole after the MAC addresses.
extension Comparer {
    func primaryDatagram(_ ref: PacketRef, slot: Int, now: UInt64) {
        if !connections[slot].holding, let match = findEqual(to: ref, in: connections[slot].secondary, slot: slot) {
            unlink(match, slot, primary: false)
            counters.datagramsMatched &+= 1
            drop(match)
            release(ref)
            return
        }
        enqueue(ref, slot, primary: true)
        if !connections[slot].holding && connections[slot].primary.count > configuration.maxQueueSize {
            diverge(slot, .queueOverflow, primary: ref, secondary: nil, streamOffset: nil, now: now)
        }
    }

    func secondaryDatagram(_ ref: PacketRef, slot: Int, now: UInt64) {
        if connections[slot].holding {
            drop(ref)
            return
        }
        if let match = findEqual(to: ref, in: connections[slot].primary, slot: slot) {
            unlink(match, slot, primary: true)
            counters.datagramsMatched &+= 1
            release(match)
            drop(ref)
            return
        }
        enqueue(ref, slot, primary: false)
        // Unmatched secondary datagrams are not the client's problem; keep the queue bounded by forgetting
        // the oldest.
        if connections[slot].secondary.count > configuration.maxQueueSize {
            drop(dequeueHead(slot, primary: false))
        }
    }

    /// Equal length and equal bytes (two empty ranges are equal, whatever their addresses).
    @inline(__always)
    static func sameBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        guard a.count > 0 else { return true }
        guard let pa = a.baseAddress, let pb = b.baseAddress else { return false }
        return memcmp(pa, pb, a.count) == 0
    }

    func findEqual(to ref: PacketRef, in queue: PacketQueue, slot: Int) -> PacketRef? {
        let wanted = comparedBytes(ref, kind: connections[slot].kind)
        var current = queue.head
        while !current.isNone {
            let candidate = comparedBytes(current, kind: connections[slot].kind)
            if Self.sameBytes(candidate, wanted) { return current }
            current = store.next(current)
        }
        return nil
    }

    /// The bytes that must be equal: from the L4 header to the end of the payload for UDP/ICMP; from the
    /// EtherType (or IP header for raw IP) to the end for other frames.
    @inline(__always)
    func comparedBytes(_ ref: PacketRef, kind: Kind) -> UnsafeRawBufferPointer {
        let frame = store.frame(ref)
        let layout = store.metadata(ref).pointee.layout
        if kind == .datagram {
            return UnsafeRawBufferPointer(rebasing: frame[layout.transportOffset..<layout.payloadEnd])
        }
        let start = layout.linkType == .ethernet ? min(12, frame.count) : 0
        return UnsafeRawBufferPointer(rebasing: frame[start...])
    }
}
