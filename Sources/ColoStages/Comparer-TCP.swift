import CColoLinux
import ColoPacket

/// TCP: the two sides' payloads compared as byte streams from `verified` onward.
extension Comparer {
    struct Segment {
        var seq: UInt32
        var length: UInt32
        var flags: TCPFlags
        @inline(__always) var end: UInt32 { seq &+ length }
    }

    @inline(__always)
    func segment(_ ref: PacketRef) -> Segment {
        // Fields are read through the metadata pointer: no copy of the whole layout per call (these run
        // several times per packet in the queue walks).
        let meta = store.metadata(ref)
        let frame = store.frame(ref)
        let t = meta.pointee.layout.transportOffset
        return Segment(
            seq: UInt32(bigEndian: frame.loadUnaligned(fromByteOffset: t + 4, as: UInt32.self)),
            length: UInt32(truncatingIfNeeded: meta.pointee.layout.payloadEnd - meta.pointee.layout.payloadOffset),
            flags: TCPFlags(rawValue: frame[t + 13]))
    }

    @inline(__always)
    func payload(_ ref: PacketRef) -> UnsafeRawBufferPointer {
        let meta = store.metadata(ref)
        return UnsafeRawBufferPointer(
            rebasing: store.frame(ref)[meta.pointee.layout.payloadOffset..<meta.pointee.layout.payloadEnd])
    }

    /// Sets the stream origin from the primary's first segment (a SYN gives ISN + 1).
    @inline(__always)
    func establishBase(_ slot: Int, _ s: Segment) {
        if !connections[slot].haveBase {
            connections[slot].haveBase = true
            let start = s.flags.contains(.syn) ? s.seq &+ 1 : s.seq
            connections[slot].base = start
            connections[slot].verified = start
            connections[slot].primaryEnd = start
        } else if s.flags.contains(.syn) && TCPSequence.after(s.seq &+ 1, connections[slot].verified) {
            // A SYN seen after other traffic (reopened connection): start over from it.
            connections[slot].base = s.seq &+ 1
            connections[slot].verified = s.seq &+ 1
            connections[slot].primaryEnd = s.seq &+ 1
        }
    }

    /// A SYN on a connection whose previous incarnation has ended (the client reused its port, as it does when
    /// the server closed first): what was learned about the old one must not carry over, least of all that the
    /// secondary has already spoken, which would release the primary's SYN|ACK before the offset is known.
    @inline(__always)
    func startNewIncarnationIfNeeded(_ slot: Int, _ s: Segment) {
        guard s.flags.contains(.syn), connections[slot].haveBase, connections[slot].isClosed else { return }
        connections[slot].haveBase = false
        connections[slot].secondarySeen = false
        connections[slot].primaryFin = nil
        connections[slot].secondaryFin = nil
        connections[slot].primaryReset = false
        connections[slot].secondaryReset = false
        connections[slot].lengthReported = false
    }

    func primaryTCP(_ ref: PacketRef, slot: Int, now: UInt64) {
        let s = segment(ref)
        startNewIncarnationIfNeeded(slot, s)
        establishBase(slot, s)
        if s.length > 0 && TCPSequence.after(s.end, connections[slot].primaryEnd) {
            connections[slot].primaryEnd = s.end
        }
        if s.flags.contains(.fin) { connections[slot].primaryFin = s.end }
        if s.flags.contains(.rst) { connections[slot].primaryReset = true }
        if s.length > 0 && TCPSequence.atOrBefore(s.end, connections[slot].verified) {
            counters.retransmissions &+= 1
        }
        if matchesHead(ref, s, slot: slot, fromPrimary: true) { return }
        enqueue(ref, slot, primary: true)
        if connections[slot].holding { return }
        if connections[slot].primary.count > configuration.maxQueueSize {
            diverge(slot, .queueOverflow, primary: ref, secondary: nil, streamOffset: nil, now: now)
            if connections[slot].holding { return }
        }
        if s.flags.contains(.rst), let pending = firstUnverifiedSecondary(slot) {
            diverge(slot, .protocol, primary: ref, secondary: pending, streamOffset: nil, now: now)
            if connections[slot].holding { return }
        }
        advance(slot, now: now)
    }

    func secondaryTCP(_ ref: PacketRef, slot: Int, now: UInt64) {
        let s = segment(ref)
        startNewIncarnationIfNeeded(slot, s)
        connections[slot].secondarySeen = true
        // The stream origin comes from the primary only: a secondary segment whose offset is not yet known is
        // still in the secondary's own sequence space.
        if !connections[slot].haveBase {
            if s.length > 0 && !s.flags.contains(.rst) && !connections[slot].holding {
                enqueue(ref, slot, primary: false)
            } else {
                drop(ref)
            }
            return
        }
        if s.flags.contains(.fin) { connections[slot].secondaryFin = s.end }
        if connections[slot].holding {
            drop(ref)
            return
        }
        if s.flags.contains(.rst) {
            connections[slot].secondaryReset = true
            if TCPSequence.after(connections[slot].primaryEnd, connections[slot].verified),
                let pending = firstUnverifiedPrimary(slot)
            {
                diverge(slot, .protocol, primary: pending, secondary: ref, streamOffset: nil, now: now)
            }
            drop(ref)
            if !connections[slot].holding { advance(slot, now: now) }
            return
        }
        if s.length == 0 || TCPSequence.atOrBefore(s.end, connections[slot].verified) {
            // Bare SYN/ACK/FIN, or bytes already compared (a retransmission): nothing left to compare.
            if s.length > 0 { counters.retransmissions &+= 1 }
            drop(ref)
            advance(slot, now: now)
            return
        }
        if matchesHead(ref, s, slot: slot, fromPrimary: false) { return }
        insertBySequence(ref, s.seq, slot: slot)
        if connections[slot].secondary.count > configuration.maxQueueSize {
            diverge(
                slot, .queueOverflow,
                primary: connections[slot].primary.head.isNone ? nil : connections[slot].primary.head,
                secondary: ref, streamOffset: nil, now: now)
            if connections[slot].holding { return }
        }
        advance(slot, now: now)
    }

    /// The common case settled without queueing: a segment starting at `verified` whose own side has nothing
    /// queued, and whose bytes the other side's queue head carries exactly (same start, same length, equal
    /// bytes). The outcome is the one the general path (queue it, then `advance`) reaches: both are matched,
    /// `verified` moves past them, the secondary's copy is dropped and the primary's released, in the same order
    /// and with the same counts. It only skips the queue walks, which were a third of the comparer's work per
    /// pair. When any condition fails (a SYN, FIN or RST, on this segment or seen earlier; the connection
    /// holding; something queued on its own side; other cuts or other bytes) it returns false having changed
    /// nothing, and the caller goes the general way, where a difference is found and reported.
    @inline(__always)
    func matchesHead(_ ref: PacketRef, _ s: Segment, slot: Int, fromPrimary: Bool) -> Bool {
        guard matchesHeads, s.length > 0, !connections[slot].holding, configuration.maxQueueSize >= 1,
            s.seq == connections[slot].verified, connections[slot].primaryFin == nil,
            connections[slot].secondaryFin == nil, s.flags.isDisjoint(with: [.syn, .fin, .rst])
        else { return false }
        let own = fromPrimary ? connections[slot].primary : connections[slot].secondary
        let other = fromPrimary ? connections[slot].secondary : connections[slot].primary
        guard own.isEmpty, !other.isEmpty else { return false }
        let head = other.head
        let h = segment(head)
        guard h.seq == s.seq, h.length == s.length,
            Self.firstDifference(payload(ref), 0, payload(head), 0, Int(s.length)) == nil
        else { return false }
        counters.bytesCompared &+= UInt64(s.length)
        headMatched &+= 1
        connections[slot].verified = s.end
        if fromPrimary {
            // It would have been the only packet in its queue: releaseReady would release it first.
            release(ref)
        } else {
            drop(ref)
        }
        dropVerifiedSecondary(slot)
        releaseReady(slot)
        prefetchHeads(slot)
        return true
    }

    /// Keeps the secondary queue in sequence order; arrivals are almost always at the tail.
    func insertBySequence(_ ref: PacketRef, _ seq: UInt32, slot: Int) {
        let queue = connections[slot].secondary
        if queue.isEmpty || TCPSequence.atOrBefore(segment(queue.tail).seq, seq) {
            enqueue(ref, slot, primary: false)
            return
        }
        var previous = PacketRef.none
        var current = queue.head
        while !current.isNone, TCPSequence.atOrBefore(segment(current).seq, seq) {
            previous = current
            current = store.next(current)
        }
        insertSecondary(ref, after: previous, slot)
    }

    /// Compares as far as both sides have bytes, then releases what is fully matched.
    func advance(_ slot: Int, now: UInt64) {
        guard connections[slot].haveBase else { return }
        compare: while !connections[slot].holding {
            let v = connections[slot].verified
            guard let p = covering(v, in: connections[slot].primary),
                let s = covering(v, in: connections[slot].secondary)
            else { break }
            let ps = segment(p)
            let ss = segment(s)
            let end = TCPSequence.before(ps.end, ss.end) ? ps.end : ss.end
            let count = Int(end &- v)
            let a = payload(p)
            let b = payload(s)
            let aStart = Int(v &- ps.seq)
            let bStart = Int(v &- ss.seq)
            if let difference = Self.firstDifference(a, aStart, b, bStart, count) {
                let offset = UInt64(v &+ UInt32(difference) &- connections[slot].base)
                counters.bytesCompared &+= UInt64(difference)
                diverge(slot, .payload, primary: p, secondary: s, streamOffset: offset, now: now)
                continue compare
            }
            counters.bytesCompared &+= UInt64(count)
            connections[slot].verified = end
        }
        if connections[slot].holding { return }
        checkLengths(slot, now: now)
        dropVerifiedSecondary(slot)
        releaseReady(slot)
        prefetchHeads(slot)
    }

    /// The next step on this connection starts from its queue heads, when the other side's next segment arrives
    /// (with many connections, many packets later): by then a queued frame stored hundreds of frames ago has
    /// left the near caches, and its first read stalled the comparison.
    @inline(__always)
    func prefetchHeads(_ slot: Int) {
        prefetch(connections[slot].primary.head)
        prefetch(connections[slot].secondary.head)
    }

    /// Starts loading what a comparison reads of a queued packet: its metadata and its first three lines.
    @inline(__always)
    func prefetch(_ ref: PacketRef) {
        guard !ref.isNone, let frame = store.buffer(ref).baseAddress else { return }
        let meta = UnsafeRawPointer(store.metadata(ref))
        CColoLinux_prefetch(meta)
        CColoLinux_prefetch(meta + 64)
        CColoLinux_prefetch(meta + 128)
        CColoLinux_prefetch(meta + 192)
        CColoLinux_prefetch(frame)
        CColoLinux_prefetch(frame + 64)
        CColoLinux_prefetch(frame + 128)
    }

    /// The queued segment with payload covering sequence number `v`.
    @inline(__always)
    func covering(_ v: UInt32, in queue: PacketQueue) -> PacketRef? {
        var current = queue.head
        while !current.isNone {
            let s = segment(current)
            if s.length > 0 && TCPSequence.atOrBefore(s.seq, v) && TCPSequence.after(s.end, v) { return current }
            current = store.next(current)
        }
        return nil
    }

    /// Index of the first differing byte of two ranges, or nil when equal.
    @inline(__always)
    static func firstDifference(
        _ a: UnsafeRawBufferPointer, _ aStart: Int, _ b: UnsafeRawBufferPointer, _ bStart: Int, _ count: Int
    ) -> Int? {
        guard count > 0, let pa = a.baseAddress, let pb = b.baseAddress else { return nil }
        if memcmp(pa + aStart, pb + bStart, count) == 0 { return nil }
        var i = 0
        while i < count && a[aStart + i] == b[bStart + i] { i += 1 }
        return i
    }

    /// One side ended its stream (FIN) where the other has more bytes: the streams have different lengths.
    func checkLengths(_ slot: Int, now: UInt64) {
        // Nearly always no FIN yet: answered from two fields before the connection is copied out.
        guard !connections[slot].lengthReported,
            connections[slot].secondaryFin != nil || connections[slot].primaryFin != nil
        else { return }
        let connection = connections[slot]
        if let fin = connection.secondaryFin, TCPSequence.after(connection.primaryEnd, fin),
            TCPSequence.atOrBefore(fin, connection.verified), let pending = covering(fin, in: connection.primary)
        {
            connections[slot].lengthReported = true
            diverge(
                slot, .length, primary: pending, secondary: nil,
                streamOffset: UInt64(fin &- connection.base), now: now)
        } else if let fin = connection.primaryFin, TCPSequence.atOrBefore(fin, connection.verified),
            let pending = covering(fin, in: connection.secondary)
        {
            connections[slot].lengthReported = true
            diverge(
                slot, .length, primary: nil, secondary: pending,
                streamOffset: UInt64(fin &- connection.base), now: now)
        }
    }

    /// Drops secondary segments whose bytes are all before `verified`.
    ///
    /// The queue is in sequence order and holds only segments with bytes, so the walk stops at the first one that
    /// starts at or after `verified`: neither it nor any later one can end before it. (Walking the whole queue made
    /// every comparison step cost the length of the secondary's lead: with the secondary 1,000 segments ahead, half
    /// of the proxy's time went here.)
    func dropVerifiedSecondary(_ slot: Int) {
        let verified = connections[slot].verified
        var current = connections[slot].secondary.head
        while !current.isNone {
            let next = store.next(current)
            let s = segment(current)
            if TCPSequence.atOrBefore(verified, s.seq) { return }
            if TCPSequence.atOrBefore(s.end, verified) {
                unlink(current, slot, primary: false)
                drop(current)
            }
            current = next
        }
    }

    /// Releases primary packets from the head of the queue while each is fully matched, in arrival order.
    func releaseReady(_ slot: Int) {
        while !connections[slot].primary.isEmpty {
            let head = connections[slot].primary.head
            let s = segment(head)
            if s.length > 0 {
                guard TCPSequence.atOrBefore(s.end, connections[slot].verified) else { return }
            } else {
                // SYN, pure ACK, FIN, RST: once the secondary has said anything on this connection; a FIN only
                // once every byte before it matched.
                guard connections[slot].secondarySeen else { return }
                if s.flags.contains(.fin) && TCPSequence.after(s.seq, connections[slot].verified) { return }
            }
            release(dequeueHead(slot, primary: true))
        }
    }

    func firstUnverifiedSecondary(_ slot: Int) -> PacketRef? {
        var current = connections[slot].secondary.head
        while !current.isNone {
            let s = segment(current)
            if s.length > 0 && TCPSequence.after(s.end, connections[slot].verified) { return current }
            current = store.next(current)
        }
        return nil
    }

    func firstUnverifiedPrimary(_ slot: Int) -> PacketRef? {
        var current = connections[slot].primary.head
        while !current.isNone {
            let s = segment(current)
            if s.length > 0 && TCPSequence.after(s.end, connections[slot].verified) { return current }
            current = store.next(current)
        }
        return nil
    }
}

#if canImport(Glibc)
    import Glibc
#endif
